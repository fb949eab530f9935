package echo

import (
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
)

func TestPage(t *testing.T) {
	env := map[string]string{"NODE_NAME": "site-1-node-1", "POD_NAME": "echo-abc", "POD_NAMESPACE": "default", "POD_IP": "198.18.64.5"}
	cases := []struct {
		name       string
		pod        Pod
		body       string
		want, lack []string
	}{
		{name: "pod information from the downward API", pod: PodFromEnv(func(k string) string { return env[k] }),
			want: []string{"Hostname: host-1", "\tnode name:\tsite-1-node-1", "\tpod name:\techo-abc", "\tpod namespace:\tdefault", "\tpod IP:\t198.18.64.5",
				"\tclient_address=127.0.0.1\n", "\tmethod=GET", "\treal path=/path", "\tquery=a=1", "-no body in request-"},
			lack: []string{"-no pod information available-"}},
		{name: "no variables set", pod: PodFromEnv(func(string) string { return "" }), body: "hello",
			want: []string{"-no pod information available-", "\tmethod=POST", "hello"}, lack: []string{"node name:"}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			srv := httptest.NewServer(Handler("host-1", tc.pod))
			defer srv.Close()
			method, body := http.MethodGet, io.Reader(nil)
			if tc.body != "" {
				method, body = http.MethodPost, strings.NewReader(tc.body)
			}
			req, _ := http.NewRequest(method, srv.URL+"/path?a=1", body)
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			defer resp.Body.Close()
			page, _ := io.ReadAll(resp.Body)
			for _, w := range tc.want {
				if !strings.Contains(string(page), w) {
					t.Errorf("page lacks %q:\n%s", w, page)
				}
			}
			for _, l := range tc.lack {
				if strings.Contains(string(page), l) {
					t.Errorf("page has %q:\n%s", l, page)
				}
			}
		})
	}
}

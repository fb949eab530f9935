// Package echo writes the page of the Kubernetes e2e echoserver.
package echo

import (
	"fmt"
	"io"
	"net/http"
	"sort"
	"strings"
)

// maxBody bounds how much of a request body is echoed.
const maxBody = 64 << 10

// Pod is what the page says of the pod that answers.
type Pod struct {
	NodeName, Name, Namespace, IP string
}

// PodFromEnv reads the variables the echoserver manifests set through the
// downward API.
func PodFromEnv(getenv func(string) string) Pod {
	return Pod{NodeName: getenv("NODE_NAME"), Name: getenv("POD_NAME"), Namespace: getenv("POD_NAMESPACE"), IP: getenv("POD_IP")}
}

func (p Pod) known() bool { return p.NodeName != "" || p.Name != "" || p.Namespace != "" || p.IP != "" }

// Handler answers every request with the page.
func Handler(hostname string, pod Pod) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/plain")
		_, _ = io.WriteString(w, Page(hostname, pod, r))
	})
}

// Page is the echoserver's answer to r.
func Page(hostname string, pod Pod, r *http.Request) string {
	var b strings.Builder
	fmt.Fprintf(&b, "\n\nHostname: %s\n\n", hostname)
	b.WriteString("Pod Information:\n")
	if pod.known() {
		fmt.Fprintf(&b, "\tnode name:\t%s\n\tpod name:\t%s\n\tpod namespace:\t%s\n\tpod IP:\t%s\n", pod.NodeName, pod.Name, pod.Namespace, pod.IP)
	} else {
		b.WriteString("\t-no pod information available-\n")
	}
	b.WriteString("\nServer values:\n\tserver_version=sitegrid-echoserver\n")
	client := r.RemoteAddr
	if i := strings.LastIndexByte(client, ':'); i > 0 {
		client = strings.Trim(client[:i], "[]")
	}
	scheme := "http"
	if r.TLS != nil {
		scheme = "https"
	}
	fmt.Fprintf(&b, "\nRequest Information:\n\tclient_address=%s\n\tmethod=%s\n\treal path=%s\n\tquery=%s\n\trequest_version=%d.%d\n\trequest_scheme=%s\n\trequest_uri=%s://%s%s\n",
		client, r.Method, r.URL.Path, r.URL.RawQuery, r.ProtoMajor, r.ProtoMinor, scheme, scheme, r.Host, r.URL.RequestURI())
	b.WriteString("\nRequest Headers:\n")
	names := make([]string, 0, len(r.Header)+1)
	headers := map[string]string{"host": r.Host}
	for k, v := range r.Header {
		headers[strings.ToLower(k)] = strings.Join(v, ",")
	}
	for k := range headers {
		names = append(names, k)
	}
	sort.Strings(names)
	for _, k := range names {
		fmt.Fprintf(&b, "\t%s=%s\n", k, headers[k])
	}
	b.WriteString("\nRequest Body:\n")
	body, _ := io.ReadAll(io.LimitReader(r.Body, maxBody))
	if len(body) == 0 {
		b.WriteString("\t-no body in request-\n")
	} else {
		b.Write(body)
		b.WriteString("\n")
	}
	return b.String()
}

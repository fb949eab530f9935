// Command echoserver is the lab's image sitegrid.local/echoserver:v1: it
// answers HTTP on :8080 with the "Pod Information" lines of the Kubernetes
// e2e echoserver (gcr.io/google_containers/echoserver), which SuperEdge's and
// sitegrid's sample manifests use, read from the NODE_NAME, POD_NAME,
// POD_NAMESPACE and POD_IP variables those manifests set, and the request
// as it arrived, client address included.
package main

import (
	"flag"
	"log"
	"net/http"
	"os"
	"time"

	"github.com/sitegrid/sitegrid/images/echoserver/echo"
)

func main() {
	addr := flag.String("listen", ":8080", "address to answer HTTP on")
	flag.Parse()
	host, _ := os.Hostname()
	srv := &http.Server{
		Addr:              *addr,
		Handler:           echo.Handler(host, echo.PodFromEnv(os.Getenv)),
		ReadHeaderTimeout: 10 * time.Second,
	}
	log.Printf("echoserver listening on %s", *addr)
	log.Fatal(srv.ListenAndServe())
}

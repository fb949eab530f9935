package controlplane

import "testing"

// TestFreePortNeverTwiceAndBelowEphemeral: ports handed out are distinct
// within the process and outside the range the kernel gives to port-0
// listeners and outgoing connections.
func TestFreePortNeverTwiceAndBelowEphemeral(t *testing.T) {
	high := ephemeralLow()
	seen := map[int]bool{}
	for range 200 {
		p, err := FreePort()
		if err != nil {
			t.Fatal(err)
		}
		if seen[p] {
			t.Fatalf("port %d handed out twice", p)
		}
		if p < lowestFreePort || p >= high {
			t.Fatalf("port %d outside [%d, %d)", p, lowestFreePort, high)
		}
		seen[p] = true
	}
}

package testserver

import (
	"fmt"
	"net/http"
	"os/exec"
	"testing"
)

// TestStartStop runs a tiny HTTP server (python3's, part of the machine
// image) to prove Start, WaitHTTP and Stop work on a real process.
func TestStartStop(t *testing.T) {
	py, err := exec.LookPath("python3")
	if err != nil {
		t.Skip("python3 not installed")
	}
	port := FreePort(t)
	p := Start(t, py, []string{"-m", "http.server", "--bind", "127.0.0.1", fmt.Sprint(port), "--directory", t.TempDir()}, nil)
	url := fmt.Sprintf("http://127.0.0.1:%d/", port)
	p.WaitHTTP(t, url, 200)
	p.Stop()
	if _, err := http.Get(url); err == nil {
		t.Fatal("server still answers after Stop")
	}
}

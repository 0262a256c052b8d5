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

func TestRegistry(t *testing.T) {
	addr := Registry(t, "", "")
	resp, err := http.Get("http://" + addr + "/v2/")
	if err != nil || resp.StatusCode != 200 {
		t.Fatalf("GET /v2/: %v %v", resp, err)
	}
	resp.Body.Close()
	addr = Registry(t, "u", "p4ssword")
	resp, err = http.Get("http://" + addr + "/v2/")
	if err != nil || resp.StatusCode != 401 {
		t.Fatalf("GET /v2/ without credentials: %v %v", resp, err)
	}
	resp.Body.Close()
}

package testserver

import (
	"io"
	"net/http"
	"strconv"
	"strings"
	"testing"
)

// Metrics are the samples of a Prometheus text exposition, by series as
// the text writes it: `name{label="v",...}` (labels sorted by name, as
// client_golang writes them), or the bare name.
type Metrics map[string]float64

// ParseMetrics reads the samples of text, the answer of a /metrics; a line
// it cannot read fails the test.
func ParseMetrics(t testing.TB, text string) Metrics {
	t.Helper()
	m := Metrics{}
	for line := range strings.SplitSeq(text, "\n") {
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		i := strings.LastIndexByte(line, ' ')
		if i < 0 {
			t.Fatalf("metrics line %q: no value", line)
		}
		v, err := strconv.ParseFloat(line[i+1:], 64)
		if err != nil {
			t.Fatalf("metrics line %q: %v", line, err)
		}
		m[line[:i]] = v
	}
	return m
}

// Scrape GETs url (a /metrics) and parses its answer.
func Scrape(t testing.TB, url string) Metrics {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatalf("scraping %s: %v", url, err)
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(resp.Body)
	if err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("scraping %s: %d %v", url, resp.StatusCode, err)
	}
	return ParseMetrics(t, string(data))
}

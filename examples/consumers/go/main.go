// Command consumer calls an API with the token token-vendor vends, Go standard library only.
//
// Pattern: cache the token until the refresh_time in token.json, then read the file again by path.
// VendedTokenSource plays the part of golang.org/x/oauth2's TokenSource without the dependency;
// BearerTransport is the http.RoundTripper that puts its token on every request, so any
// http.Client can use it. An app already on x/oauth2 returns &oauth2.Token{AccessToken: ...} from
// Token and uses oauth2.Transport instead: it asks the source for every request, and the source
// caches.
package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"sync"
	"time"
)

// VendedTokenSource returns the token in token.json until its refresh_time, then reads the file again.
type VendedTokenSource struct {
	path string

	mu          sync.Mutex
	token       string
	refreshTime time.Time
}

func NewVendedTokenSource(tokenDir string) *VendedTokenSource {
	return &VendedTokenSource{path: filepath.Join(tokenDir, "token.json")}
}

func (s *VendedTokenSource) Token() (string, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.token == "" || !time.Now().Before(s.refreshTime) {
		// By path, every time: each refresh replaces the file with a new one. Bounded: a token file is a few KiB.
		f, err := os.Open(s.path)
		if err != nil {
			return "", err
		}
		b, err := io.ReadAll(io.LimitReader(f, 64<<10))
		f.Close()
		if err != nil {
			return "", err
		}
		var doc struct {
			AccessToken string    `json:"access_token"`
			RefreshTime time.Time `json:"refresh_time"`
		}
		if err := json.Unmarshal(b, &doc); err != nil {
			return "", fmt.Errorf("%s: %w", s.path, err)
		}
		if doc.AccessToken == "" {
			return "", fmt.Errorf("%s: no access_token", s.path)
		}
		s.token, s.refreshTime = doc.AccessToken, doc.RefreshTime
	}
	return s.token, nil
}

// BearerTransport sets `Authorization: Bearer <token>` on every request it sends to Host (scheme and
// host[:port], as in the API's URL). http.Client follows redirects through the same transport, so a
// request to any other host (a redirect to a CDN or a login page) goes without the token.
type BearerTransport struct {
	Source interface{ Token() (string, error) }
	Base   http.RoundTripper
	Host   *url.URL
}

func (t *BearerTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	if req.URL.Scheme != t.Host.Scheme || req.URL.Host != t.Host.Host {
		return t.Base.RoundTrip(req)
	}
	tok, err := t.Source.Token()
	if err != nil {
		if req.Body != nil {
			req.Body.Close()
		}
		return nil, err
	}
	// A RoundTripper must not change the caller's request.
	r := req.Clone(req.Context())
	r.Header.Set("Authorization", "Bearer "+tok)
	return t.Base.RoundTrip(r)
}

// --- The example contract (TOKEN_DIR, API_URL, DURATION in; `requests=N rejected=M` out) ---

func main() {
	tokenDir, apiURL := os.Getenv("TOKEN_DIR"), os.Getenv("API_URL")
	duration, err := strconv.ParseFloat(os.Getenv("DURATION"), 64)
	if tokenDir == "" || apiURL == "" || err != nil {
		fmt.Fprintln(os.Stderr, "go: set TOKEN_DIR, API_URL and DURATION (seconds)")
		os.Exit(2)
	}
	api, err := url.Parse(apiURL)
	if err != nil {
		fmt.Fprintf(os.Stderr, "go: API_URL: %v\n", err)
		os.Exit(2)
	}
	client := &http.Client{
		Transport: &BearerTransport{Source: NewVendedTokenSource(tokenDir), Base: http.DefaultTransport, Host: api},
		Timeout:   5 * time.Second,
	}
	requests, rejected := 0, 0
	start := time.Now()
	end := start.Add(time.Duration(duration * float64(time.Second)))
	for time.Now().Before(end) {
		requests++
		if err := call(client, apiURL); err != nil {
			rejected++
			if rejected <= 3 {
				fmt.Fprintf(os.Stderr, "go: request %d: %v\n", requests, err)
			}
		}
		// Ten a second, on a fixed schedule, so a slow answer does not lower the rate.
		time.Sleep(time.Until(start.Add(time.Duration(requests) * 100 * time.Millisecond)))
	}
	fmt.Printf("requests=%d rejected=%d\n", requests, rejected)
}

func call(client *http.Client, apiURL string) error {
	resp, err := client.Get(apiURL)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	// Drained, so the connection is reused.
	if _, err := io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10)); err != nil {
		return err
	}
	if resp.StatusCode < 200 || resp.StatusCode > 299 {
		return errors.New("HTTP " + strconv.Itoa(resp.StatusCode))
	}
	return nil
}

package token

import (
	"context"
	"encoding/base64"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"go.uber.org/goleak"
)

// A token may be a credential: what the parser says about a bad one must not
// repeat it, since the server logs it.
func TestParserErrorsDoNotRepeatTheToken(t *testing.T) {
	plain, _ := NewParser("Cleartext", "")
	b64, _ := NewParser("Cleartext", "base64")
	const secret = "hunter2-api-key"
	for name, try := range map[string]func() error{
		"plain": func() error { _, err := plain.Parse([]byte(secret)); return err },
		"base64": func() error {
			_, err := b64.Parse([]byte(base64.StdEncoding.EncodeToString([]byte(secret))))
			return err
		},
	} {
		err := try()
		if err == nil || strings.Contains(err.Error(), "hunter2") {
			t.Errorf("%s: %v", name, err)
		}
	}
}

func TestDescribeShowsOnlyAddresses(t *testing.T) {
	if got := Describe([]byte("tcp:10.0.0.5:22")); got != "tcp:10.0.0.5:22" {
		t.Errorf("address shown as %q", got)
	}
	if got := Describe([]byte("hunter2-api-key")); strings.Contains(got, "hunter2") || !strings.Contains(got, "15 bytes") {
		t.Errorf("credential shown as %q", got)
	}
}

// The Http source's errors end up in the client's log: they name the service
// without its query string (an API key, the application's address).
func TestHTTPSourceErrorsHideTheQuery(t *testing.T) {
	defer goleak.VerifyNone(t)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.WriteHeader(http.StatusTeapot)
	}))
	defer srv.Close()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	dead := ln.Addr().String()
	ln.Close()
	for _, base := range []string{srv.URL, "http://user:pw@" + dead} {
		src, err := NewSource("Http", base+"/token?key=SECRETKEY", SourceOptions{})
		if err != nil {
			t.Fatal(err)
		}
		_, err = src.Token(context.Background(), tcpAddr("10.9.8.7:4242"))
		if err == nil {
			t.Fatalf("%s: no error", base)
		}
		for _, leak := range []string{"SECRETKEY", "10.9.8.7", "pw@"} {
			if strings.Contains(err.Error(), leak) {
				t.Errorf("%s: error %q shows %q", base, err, leak)
			}
		}
		if !strings.Contains(err.Error(), "/token") {
			t.Errorf("%s: error %q does not name the service", base, err)
		}
	}
	srv.Client().CloseIdleConnections()
	http.DefaultTransport.(*http.Transport).CloseIdleConnections()
}

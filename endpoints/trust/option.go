package trust

import (
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"fmt"
	"log/slog"
	"os"
)

// OptionError is an error in the value of one option, named as its flag
// without the dashes ("cert-file"), so that a command can say where that value
// came from: the command line, or a line of its config file.
type OptionError struct {
	Option string
	Err    error
}

func (e *OptionError) Error() string { return "--" + e.Option + ": " + e.Err.Error() }
func (e *OptionError) Unwrap() error { return e.Err }

func optionErr(option, format string, args ...any) error {
	return &OptionError{Option: option, Err: fmt.Errorf(format, args...)}
}

// loadKeyPair reads a certificate and its private key, blaming the file that
// is at fault: tls.LoadX509KeyPair cannot tell which one it was. A key that
// other users can read is warned about on log.
func loadKeyPair(certFile, keyFile string, log *slog.Logger) (tls.Certificate, error) {
	if (certFile == "") != (keyFile == "") {
		if certFile == "" {
			return tls.Certificate{}, optionErr("key-file", "needs --cert-file too (give both or neither)")
		}
		return tls.Certificate{}, optionErr("cert-file", "needs --key-file too (give both or neither)")
	}
	certPEM, err := os.ReadFile(certFile)
	if err != nil {
		return tls.Certificate{}, &OptionError{Option: "cert-file", Err: err}
	}
	keyPEM, err := os.ReadFile(keyFile)
	if err != nil {
		return tls.Certificate{}, &OptionError{Option: "key-file", Err: err}
	}
	var block *pem.Block
	for rest := certPEM; ; {
		if block, rest = pem.Decode(rest); block == nil || block.Type == "CERTIFICATE" {
			break
		}
	}
	if block == nil {
		return tls.Certificate{}, optionErr("cert-file", "%s holds no PEM certificate", certFile)
	}
	if _, err := x509.ParseCertificate(block.Bytes); err != nil {
		return tls.Certificate{}, optionErr("cert-file", "%s: %w", certFile, err)
	}
	pair, err := tls.X509KeyPair(certPEM, keyPEM)
	if err != nil {
		return tls.Certificate{}, optionErr("key-file", "%s is not the private key of %s: %w", keyFile, certFile, err)
	}
	warnLooseKey(log, "key-file", keyFile)
	return pair, nil
}

// loadCAs reads the PEM certificates of a CA file (option names the flag).
func loadCAs(option, path string) (*x509.CertPool, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, &OptionError{Option: option, Err: err}
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(b) {
		return nil, optionErr(option, "%s holds no PEM certificate", path)
	}
	return pool, nil
}

package trust

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"log/slog"
	"math/big"
	"os"
	"path/filepath"
	"time"

	"github.com/quictun/quictun/codecs/preamble"
)

// ServerOptions says where the server's identity comes from.
type ServerOptions struct {
	CertFile, KeyFile string // a key pair of the operator's; both or neither
	// StateDir keeps the generated key pair when no CertFile is given.
	StateDir string
	// VerifyClient requires every client to present a certificate signed by a CA
	// in CAFile (mutual TLS).
	VerifyClient bool
	CAFile       string
}

// Server is the server endpoint's TLS identity.
type Server struct {
	TLS         *tls.Config
	Fingerprint string
	// ResetKey is derived from the private key, so a restarted server answers
	// packets of its previous life with a stateless reset and clients redial at
	// once instead of waiting for an idle timeout.
	ResetKey [32]byte
	// Generated is true when the key pair was made or loaded from StateDir.
	Generated bool
	CertPath  string
}

// Generated key pair file names inside StateDir.
const (
	generatedCert = "server.crt"
	generatedKey  = "server.key"
)

// LoadServer builds the server's TLS config.
func LoadServer(o ServerOptions, log *slog.Logger) (*Server, error) {
	s := &Server{CertPath: o.CertFile}
	var pair tls.Certificate
	var err error
	if o.CertFile != "" || o.KeyFile != "" {
		if pair, err = loadKeyPair(o.CertFile, o.KeyFile, log); err != nil {
			return nil, err
		}
	} else {
		if o.StateDir == "" {
			return nil, optionErr("state-dir", "empty, and no --cert-file: nowhere to keep a generated key pair")
		}
		s.Generated = true
		s.CertPath = filepath.Join(o.StateDir, generatedCert)
		pair, err = loadOrGenerate(o.StateDir, log)
		if err != nil {
			return nil, &OptionError{Option: "state-dir", Err: err}
		}
	}
	leaf, err := x509.ParseCertificate(pair.Certificate[0])
	if err != nil {
		return nil, fmt.Errorf("parse certificate: %w", err)
	}
	pair.Leaf = leaf
	s.Fingerprint = Fingerprint(leaf)
	keyDER, err := x509.MarshalPKCS8PrivateKey(pair.PrivateKey)
	if err != nil {
		return nil, fmt.Errorf("marshal private key: %w", err)
	}
	s.ResetKey = sha256.Sum256(append([]byte("quictun stateless reset key\x00"), keyDER...))

	s.TLS = &tls.Config{
		MinVersion:   tls.VersionTLS13,
		Certificates: []tls.Certificate{pair},
		NextProtos:   []string{preamble.ALPN},
	}
	if o.VerifyClient {
		if o.CAFile == "" {
			return nil, optionErr("verify-remote-endpoint", "needs --ca-file: the CA that signs client certificates")
		}
		pool, err := loadCAs("ca-file", o.CAFile)
		if err != nil {
			return nil, err
		}
		s.TLS.ClientAuth = tls.RequireAndVerifyClientCert
		s.TLS.ClientCAs = pool
	}
	return s, nil
}

func loadOrGenerate(dir string, log *slog.Logger) (tls.Certificate, error) {
	certPath, keyPath := filepath.Join(dir, generatedCert), filepath.Join(dir, generatedKey)
	pair, err := tls.LoadX509KeyPair(certPath, keyPath)
	if err == nil {
		warnLooseKey(log, "state-dir", keyPath)
		return pair, nil
	}
	if _, statErr := os.Stat(certPath); !errors.Is(statErr, os.ErrNotExist) {
		// Something is there but unusable: never overwrite an identity that
		// clients may have pinned.
		return tls.Certificate{}, fmt.Errorf("load generated key pair from %s: %w (remove both files to make a new one)", dir, err)
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return tls.Certificate{}, fmt.Errorf("make state directory: %w", err)
	}
	certPEM, keyPEM, err := selfSigned()
	if err != nil {
		return tls.Certificate{}, err
	}
	if err := writeNew(keyPath, keyPEM, 0o600); err != nil {
		return tls.Certificate{}, err
	}
	if err := writeNew(certPath, certPEM, 0o644); err != nil {
		return tls.Certificate{}, err
	}
	log.Info("generated a self-signed key pair", "cert", certPath, "key", keyPath)
	return tls.X509KeyPair(certPEM, keyPEM)
}

func writeNew(path string, data []byte, mode os.FileMode) error {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, mode)
	if err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	if _, err := f.Write(data); err != nil {
		f.Close()
		return fmt.Errorf("write %s: %w", path, err)
	}
	return f.Close()
}

func selfSigned() (certPEM, keyPEM []byte, err error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, nil, fmt.Errorf("generate key: %w", err)
	}
	serial, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 127))
	if err != nil {
		return nil, nil, fmt.Errorf("generate serial: %w", err)
	}
	host, _ := os.Hostname()
	tmpl := &x509.Certificate{
		SerialNumber:          serial,
		Subject:               pkix.Name{CommonName: "quictun-server " + host},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().AddDate(20, 0, 0),
		KeyUsage:              x509.KeyUsageDigitalSignature,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		BasicConstraintsValid: true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return nil, nil, fmt.Errorf("create certificate: %w", err)
	}
	keyDER, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return nil, nil, fmt.Errorf("marshal key: %w", err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}),
		pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: keyDER}), nil
}

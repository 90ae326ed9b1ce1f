package config

import (
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"os"
)

// ClientTLS builds a client TLS configuration from PEM files: caFile (empty:
// the system roots) verifies the server, certFile and keyFile (both or
// neither) are the client's certificate. vars names the settings in errors,
// e.g. "PARLEY_NATS_TLS".
func ClientTLS(caFile, certFile, keyFile, vars string) (*tls.Config, error) {
	tc := &tls.Config{MinVersion: tls.VersionTLS12}
	if caFile != "" {
		pem, err := os.ReadFile(caFile)
		if err != nil {
			return nil, fmt.Errorf("%s_CA: %w", vars, err)
		}
		tc.RootCAs = x509.NewCertPool()
		if !tc.RootCAs.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("%s_CA: no PEM certificate in %s", vars, caFile)
		}
	}
	if (certFile == "") != (keyFile == "") {
		return nil, fmt.Errorf("%s_CERT and %s_KEY go together", vars, vars)
	}
	if certFile != "" {
		cert, err := tls.LoadX509KeyPair(certFile, keyFile)
		if err != nil {
			return nil, fmt.Errorf("%s_CERT/%s_KEY: %w", vars, vars, err)
		}
		tc.Certificates = []tls.Certificate{cert}
	}
	return tc, nil
}

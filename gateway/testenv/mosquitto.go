package testenv

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"math/big"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/citygw/citygw/gateway/localproc"
)

const mosquittoInstall = localproc.MosquittoInstall

// Mosquitto is a mosquitto broker started for one test, listening on
// 127.0.0.1 on free ports. Stop, Start and Restart keep the ports, so a client
// that reconnects finds the broker again (fault injection).
type Mosquitto struct {
	Proc *Process
	Dir  string // the broker's temporary directory (config, password file, certificates, persistence)

	port     int
	tlsPort  int
	wsPort   int
	user     string
	password string
	certs    *TestCerts
	t        testing.TB
}

// MosquittoOption configures StartMosquitto.
type MosquittoOption func(*mosquittoConfig)

type mosquittoConfig struct {
	user, password string
	tls            bool
	clientCerts    bool
	websockets     bool
	persistence    bool
	extra          []string
}

// WithPassword turns anonymous access off and creates a password file (with
// mosquitto_passwd -b) holding one user.
func WithPassword(user, password string) MosquittoOption {
	return func(c *mosquittoConfig) { c.user, c.password = user, password }
}

// WithTLS adds a TLS listener on a second free port with a server certificate
// for 127.0.0.1 and localhost signed by a CA generated for the test (see
// Mosquitto.Certs). With requireClientCert the listener also demands a client
// certificate signed by that CA.
func WithTLS(requireClientCert bool) MosquittoOption {
	return func(c *mosquittoConfig) { c.tls, c.clientCerts = true, requireClientCert }
}

// WithWebsockets adds a plain MQTT-over-websockets listener on a third free
// port (see Mosquitto.WSURL).
func WithWebsockets() MosquittoOption {
	return func(c *mosquittoConfig) { c.websockets = true }
}

// WithPersistence makes the broker save sessions and queued messages to its
// directory, so that a persistent session survives Restart.
func WithPersistence() MosquittoOption {
	return func(c *mosquittoConfig) { c.persistence = true }
}

// WithConfigLines appends raw lines to mosquitto.conf (for example
// "max_inflight_messages 1").
func WithConfigLines(lines ...string) MosquittoOption {
	return func(c *mosquittoConfig) { c.extra = append(c.extra, lines...) }
}

// StartMosquitto writes a mosquitto.conf in a temporary directory, starts
// mosquitto on a free 127.0.0.1 port and waits until it accepts connections.
// The broker is stopped when the test ends.
func StartMosquitto(t testing.TB, opts ...MosquittoOption) *Mosquitto {
	t.Helper()
	bin := RequireTool(t, "mosquitto", mosquittoInstall)
	var cfg mosquittoConfig
	for _, o := range opts {
		o(&cfg)
	}
	m := &Mosquitto{Dir: t.TempDir(), port: FreePort(t), user: cfg.user, password: cfg.password, t: t}
	var conf strings.Builder
	line := func(format string, args ...any) { fmt.Fprintf(&conf, format+"\n", args...) }
	if os.Geteuid() == 0 {
		// As root mosquitto would switch to user "mosquitto", who cannot read
		// the test's private temporary directory.
		line("user root")
	}
	line("log_dest stdout")
	line("log_type error")
	line("log_type warning")
	line("log_type notice")
	line("log_type information")
	line("connection_messages true")
	line("log_timestamp_format %%Y-%%m-%%dT%%H:%%M:%%S")
	line("per_listener_settings false")
	if cfg.user != "" {
		pwfile := filepath.Join(m.Dir, "passwd")
		tool := RequireTool(t, "mosquitto_passwd", mosquittoInstall)
		if out, err := exec.Command(tool, "-c", "-b", pwfile, cfg.user, cfg.password).CombinedOutput(); err != nil {
			t.Fatalf("creating mosquitto password file: %v\n%s", err, out)
		}
		line("allow_anonymous false")
		line("password_file %s", pwfile)
	} else {
		line("allow_anonymous true")
	}
	if cfg.persistence {
		line("persistence true")
		line("persistence_location %s/", m.Dir)
		line("autosave_interval 1")
	} else {
		line("persistence false")
	}
	line("listener %d 127.0.0.1", m.port)
	if cfg.tls {
		m.certs = GenerateTestCerts(t, m.Dir)
		m.tlsPort = FreePort(t)
		line("listener %d 127.0.0.1", m.tlsPort)
		line("cafile %s", m.certs.CAFile)
		line("certfile %s", m.certs.ServerCertFile)
		line("keyfile %s", m.certs.ServerKeyFile)
		line("tls_version tlsv1.2")
		if cfg.clientCerts {
			line("require_certificate true")
		}
	}
	if cfg.websockets {
		m.wsPort = FreePort(t)
		line("listener %d 127.0.0.1", m.wsPort)
		line("protocol websockets")
	}
	for _, l := range cfg.extra {
		line("%s", l)
	}
	confFile := filepath.Join(m.Dir, "mosquitto.conf")
	if err := os.WriteFile(confFile, []byte(conf.String()), 0o600); err != nil {
		t.Fatalf("writing mosquitto.conf: %v", err)
	}
	m.Proc = StartProcess(t, bin, "-c", confFile)
	m.wait()
	return m
}

func (m *Mosquitto) wait() {
	m.t.Helper()
	addrs := []string{m.Addr()}
	if m.tlsPort != 0 {
		addrs = append(addrs, m.TLSAddr())
	}
	if m.wsPort != 0 {
		addrs = append(addrs, fmt.Sprintf("127.0.0.1:%d", m.wsPort))
	}
	for _, a := range addrs {
		if err := WaitTCP(a, 10*time.Second); err != nil {
			m.t.Fatalf("mosquitto did not start: %v\n%s", err, m.Proc.Output())
		}
	}
}

// Addr is the plain listener's host:port.
func (m *Mosquitto) Addr() string { return fmt.Sprintf("127.0.0.1:%d", m.port) }

// URL is the plain listener as a client URL: tcp://127.0.0.1:port.
func (m *Mosquitto) URL() string { return "tcp://" + m.Addr() }

// TLSAddr is the TLS listener's host:port ("" without WithTLS).
func (m *Mosquitto) TLSAddr() string {
	if m.tlsPort == 0 {
		return ""
	}
	return fmt.Sprintf("127.0.0.1:%d", m.tlsPort)
}

// TLSURL is the TLS listener as a client URL: ssl://127.0.0.1:port.
func (m *Mosquitto) TLSURL() string {
	if m.tlsPort == 0 {
		return ""
	}
	return "ssl://" + m.TLSAddr()
}

// WSURL is the websockets listener as a client URL: ws://127.0.0.1:port
// ("" without WithWebsockets).
func (m *Mosquitto) WSURL() string {
	if m.wsPort == 0 {
		return ""
	}
	return fmt.Sprintf("ws://127.0.0.1:%d", m.wsPort)
}

// Certs returns the generated CA and certificates (nil without WithTLS).
func (m *Mosquitto) Certs() *TestCerts { return m.certs }

// Credentials returns the user and password given to WithPassword.
func (m *Mosquitto) Credentials() (user, password string) { return m.user, m.password }

// Stop stops the broker (SIGTERM; a persistent broker saves its state).
func (m *Mosquitto) Stop() { m.Proc.Stop() }

// Kill kills the broker with SIGKILL.
func (m *Mosquitto) Kill() { m.Proc.Kill() }

// Start starts the stopped broker again on the same ports and waits for them.
func (m *Mosquitto) Start() {
	m.t.Helper()
	if err := m.Proc.Start(); err != nil {
		m.t.Fatal(err)
	}
	m.wait()
}

// Restart stops and starts the broker.
func (m *Mosquitto) Restart() {
	m.t.Helper()
	m.Stop()
	m.Start()
}

// Pub publishes one message with mosquitto_pub (a third-party client), for
// tests that want to show interoperability rather than speed.
func (m *Mosquitto) Pub(topic, payload string, qos int) {
	m.t.Helper()
	tool := RequireTool(m.t, "mosquitto_pub", mosquittoInstall)
	args := []string{"-h", "127.0.0.1", "-p", fmt.Sprint(m.port), "-t", topic, "-m", payload, "-q", fmt.Sprint(qos)}
	if m.user != "" {
		args = append(args, "-u", m.user, "-P", m.password)
	}
	if out, err := exec.Command(tool, args...).CombinedOutput(); err != nil {
		m.t.Fatalf("mosquitto_pub: %v\n%s", err, out)
	}
}

// TestCerts are PEM files of a throw-away CA, a server certificate for
// 127.0.0.1/localhost and a client certificate, all signed by the CA.
type TestCerts struct {
	CAFile         string
	ServerCertFile string
	ServerKeyFile  string
	ClientCertFile string
	ClientKeyFile  string
	CA             *x509.Certificate
}

// GenerateTestCerts creates a CA, a server and a client certificate (ECDSA
// P-256, valid for a day) as PEM files in dir.
func GenerateTestCerts(t testing.TB, dir string) *TestCerts {
	t.Helper()
	caKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatalf("generating CA key: %v", err)
	}
	now := time.Now()
	caTmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(1),
		Subject:               pkix.Name{CommonName: "citygw test CA"},
		NotBefore:             now.Add(-time.Hour),
		NotAfter:              now.Add(24 * time.Hour),
		IsCA:                  true,
		BasicConstraintsValid: true,
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign,
	}
	caDER, err := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, &caKey.PublicKey, caKey)
	if err != nil {
		t.Fatalf("creating CA certificate: %v", err)
	}
	ca, err := x509.ParseCertificate(caDER)
	if err != nil {
		t.Fatalf("parsing CA certificate: %v", err)
	}
	c := &TestCerts{CA: ca, CAFile: filepath.Join(dir, "ca.pem")}
	writePEM(t, c.CAFile, "CERTIFICATE", caDER)

	leaf := func(name string, serial int64, usage x509.ExtKeyUsage, server bool) (certFile, keyFile string) {
		key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		if err != nil {
			t.Fatalf("generating %s key: %v", name, err)
		}
		tmpl := &x509.Certificate{
			SerialNumber: big.NewInt(serial),
			Subject:      pkix.Name{CommonName: "citygw test " + name},
			NotBefore:    now.Add(-time.Hour),
			NotAfter:     now.Add(24 * time.Hour),
			KeyUsage:     x509.KeyUsageDigitalSignature,
			ExtKeyUsage:  []x509.ExtKeyUsage{usage},
		}
		if server {
			tmpl.DNSNames = []string{"localhost"}
			tmpl.IPAddresses = []net.IP{net.ParseIP("127.0.0.1")}
		}
		der, err := x509.CreateCertificate(rand.Reader, tmpl, ca, &key.PublicKey, caKey)
		if err != nil {
			t.Fatalf("creating %s certificate: %v", name, err)
		}
		keyDER, err := x509.MarshalECPrivateKey(key)
		if err != nil {
			t.Fatalf("encoding %s key: %v", name, err)
		}
		certFile, keyFile = filepath.Join(dir, name+".pem"), filepath.Join(dir, name+"-key.pem")
		writePEM(t, certFile, "CERTIFICATE", der)
		writePEM(t, keyFile, "EC PRIVATE KEY", keyDER)
		return certFile, keyFile
	}
	c.ServerCertFile, c.ServerKeyFile = leaf("server", 2, x509.ExtKeyUsageServerAuth, true)
	c.ClientCertFile, c.ClientKeyFile = leaf("client", 3, x509.ExtKeyUsageClientAuth, false)
	return c
}

func writePEM(t testing.TB, file, typ string, der []byte) {
	t.Helper()
	if err := os.WriteFile(file, pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der}), 0o600); err != nil {
		t.Fatalf("writing %s: %v", file, err)
	}
}

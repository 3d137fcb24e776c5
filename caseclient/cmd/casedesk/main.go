// Command casedesk runs citygw's reference case desk: an Open311 GeoReport v2
// server (with the mySociety servicerequestupdates extension) and a Standard
// Webhooks receiver that persist what they receive and list it on a plain
// HTML page. The demo and the case client's tests run against it.
//
//	casedesk -listen 127.0.0.1:8091 -dir /var/lib/casedesk -api-key KEY -webhook-secret whsec_...
//	casedesk version
//
// See caseclient/casedesk/README.md.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/signal"
	"runtime/debug"
	"strings"
	"syscall"
	"time"

	"github.com/citygw/citygw/caseclient/casedesk"
)

// Exit codes.
const (
	exitOK      = 0
	exitRuntime = 1 // the server failed while running
	exitUsage   = 2 // bad flags or configuration
)

const usageHead = `usage: casedesk [flags]
       casedesk version

casedesk serves the Open311 GeoReport v2 API (JSON), the mySociety
servicerequestupdates extension, a Standard Webhooks receiver (POST /webhook),
an HTML list of received cases (GET /) and a loopback-only control API
(/_control/...). Everything received is kept in -dir and survives restarts.

It prints "casedesk ready: http://ADDR" once it listens.
Exit codes: 0 after a clean shutdown (SIGINT/SIGTERM), 1 on a runtime
failure, 2 on bad flags or configuration.

flags:
`

type listFlag []string

func (l *listFlag) String() string     { return strings.Join(*l, ",") }
func (l *listFlag) Set(s string) error { *l = append(*l, s); return nil }

func main() {
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

func run(args []string, stdout, stderr io.Writer) int {
	if len(args) > 0 && args[0] == "version" {
		fmt.Fprintln(stdout, "casedesk", version())
		return exitOK
	}
	fs := flag.NewFlagSet("casedesk", flag.ContinueOnError)
	fs.SetOutput(stderr)
	var (
		listen     = fs.String("listen", "127.0.0.1:8091", "`address` to listen on (host:port; port 0 picks a free one)")
		dir        = fs.String("dir", "", "`directory` for the desk's data (casedesk.db); created if missing (required)")
		keyFile    = fs.String("api-key-file", "", "`file` of accepted Open311 api_key values, one per line (# comments)")
		secretFile = fs.String("webhook-secret-file", "", "`file` of accepted webhook secrets (whsec_...), one per line")
		services   = fs.String("services", "", "YAML `file` with the Open311 services list (default: the built-in list, the Open311 codes of configs/citycodes.yaml)")
		cityCodes  = fs.String("citycodes", "", "city code `table` (configs/citycodes.yaml format) to take the services from: one per service_code")
		sink       = fs.String("sink", "", "with -citycodes: only the service codes of this sink `name` (default: every sink's)")
		jurisdict  = fs.String("jurisdiction", "", "jurisdiction_id this desk serves (optional; another one is answered 404)")
		tolerance  = fs.Duration("webhook-tolerance", 5*time.Minute, "accepted difference between webhook-timestamp and the desk's clock")
		tokenDelay = fs.Duration("token-delay", 2*time.Second, "how long a batch service's token takes to resolve to a service_request_id")
		logLevel   = fs.String("log-level", "info", "log `level`: debug, info, warn, error")
		apiKeys    listFlag
		secrets    listFlag
	)
	fs.Var(&apiKeys, "api-key", "accepted Open311 api_key `value` (repeatable; at least one, here or in -api-key-file)")
	fs.Var(&secrets, "webhook-secret", "accepted webhook `secret` whsec_<base64> (repeatable, for rotation; also $CASEDESK_WEBHOOK_SECRET, space-separated)")
	fs.Usage = func() {
		fmt.Fprint(stderr, usageHead)
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return exitOK
		}
		return exitUsage
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(stderr, "casedesk: unexpected argument %q\n", fs.Arg(0))
		fs.Usage()
		return exitUsage
	}
	var level slog.Level
	if err := level.UnmarshalText([]byte(*logLevel)); err != nil {
		fmt.Fprintf(stderr, "casedesk: -log-level: %v\n", err)
		return exitUsage
	}
	log := slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: level}))

	cfg := casedesk.Config{Dir: *dir, WebhookTolerance: *tolerance, Jurisdiction: *jurisdict, TokenDelay: *tokenDelay}
	if cfg.Dir == "" {
		fmt.Fprintln(stderr, "casedesk: -dir is required")
		return exitUsage
	}
	cfg.APIKeys = append(cfg.APIKeys, apiKeys...)
	if *keyFile != "" {
		keys, err := readLines(*keyFile)
		if err != nil {
			fmt.Fprintf(stderr, "casedesk: -api-key-file: %v\n", err)
			return exitUsage
		}
		cfg.APIKeys = append(cfg.APIKeys, keys...)
	}
	if len(cfg.APIKeys) == 0 {
		fmt.Fprintln(stderr, "casedesk: at least one -api-key or -api-key-file is required")
		return exitUsage
	}
	cfg.WebhookSecrets = append(cfg.WebhookSecrets, secrets...)
	cfg.WebhookSecrets = append(cfg.WebhookSecrets, strings.Fields(os.Getenv("CASEDESK_WEBHOOK_SECRET"))...)
	if *secretFile != "" {
		s, err := readLines(*secretFile)
		if err != nil {
			fmt.Fprintf(stderr, "casedesk: -webhook-secret-file: %v\n", err)
			return exitUsage
		}
		cfg.WebhookSecrets = append(cfg.WebhookSecrets, s...)
	}
	if *services != "" && *cityCodes != "" {
		fmt.Fprintln(stderr, "casedesk: -services and -citycodes exclude each other")
		return exitUsage
	}
	if *cityCodes != "" {
		list, err := servicesFromCodeTable(*cityCodes, *sink)
		if err != nil {
			fmt.Fprintf(stderr, "casedesk: -citycodes: %v\n", err)
			return exitUsage
		}
		cfg.Services = list
	}
	if *services != "" {
		list, err := casedesk.LoadServices(*services)
		if err != nil {
			fmt.Fprintf(stderr, "casedesk: -services: %v\n", err)
			return exitUsage
		}
		cfg.Services = list
	}
	desk, err := casedesk.New(cfg, log)
	if err != nil {
		fmt.Fprintf(stderr, "%v\n", err)
		return exitUsage
	}
	defer desk.Close()
	if len(cfg.WebhookSecrets) == 0 {
		log.Warn("no webhook secret: every webhook will be refused (401)")
	}

	ln, err := net.Listen("tcp", *listen)
	if err != nil {
		fmt.Fprintf(stderr, "casedesk: listening on %s: %v\n", *listen, err)
		return exitRuntime
	}
	srv := &http.Server{Handler: desk.Handler(), ReadHeaderTimeout: 10 * time.Second, IdleTimeout: 2 * time.Minute,
		ErrorLog: slog.NewLogLogger(log.Handler(), slog.LevelWarn)}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(ln) }()
	fmt.Fprintf(stdout, "casedesk ready: http://%s\n", ln.Addr())
	select {
	case err := <-errc:
		log.Error("server failed", "error", err)
		return exitRuntime
	case <-ctx.Done():
	}
	log.Info("shutting down")
	sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := srv.Shutdown(sctx); err != nil {
		srv.Close() // a slow fault may hold answers back
	}
	if err := desk.Close(); err != nil {
		log.Error("closing the store", "error", err)
		return exitRuntime
	}
	return exitOK
}

// readLines reads non-empty, non-comment lines.
func readLines(path string) ([]string, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	var out []string
	for _, l := range strings.Split(string(data), "\n") {
		l = strings.TrimSpace(l)
		if l != "" && !strings.HasPrefix(l, "#") {
			out = append(out, l)
		}
	}
	return out, nil
}

func version() string {
	bi, ok := debug.ReadBuildInfo()
	if !ok {
		return "(unknown)"
	}
	v := bi.Main.Version
	for _, s := range bi.Settings {
		if s.Key == "vcs.revision" {
			v += " " + s.Value
		}
	}
	return v + " " + bi.GoVersion
}

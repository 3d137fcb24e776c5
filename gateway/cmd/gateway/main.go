// Command gateway is the citygw edge gateway: it polls Modbus devices and
// subscribes to MQTT telemetry, writes every reading to InfluxDB and runs the
// rule engine that turns anomalies into episodes.
//
// Usage:
//
//	gateway run   -config configs/gateway.yaml
//	gateway check -config configs/gateway.yaml
//	gateway version
//
// Exit codes: 0 success, 1 the gateway failed while running, 2 bad command
// line, 3 the configuration (or a file it names) is invalid.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"runtime"
	"syscall"

	"github.com/citygw/citygw/gateway/daemon"
	"github.com/citygw/citygw/gateway/gctune"
)

const (
	exitOK      = 0
	exitFailed  = 1
	exitUsage   = 2
	exitInvalid = 3
)

func main() { os.Exit(run(os.Args[1:], os.Stdout, os.Stderr)) }

const usage = `gateway — citygw edge gateway

Usage:
  gateway run   [-config FILE]   run the gateway until SIGINT/SIGTERM; SIGHUP reloads the deployment
  gateway check [-config FILE]   validate config, profiles, inventory and rules; print a summary
  gateway version                print the version

Exit codes: 0 ok, 1 failed while running, 2 bad command line, 3 invalid configuration.
Run "gateway COMMAND -help" for a command's flags.
`

func run(args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 {
		fmt.Fprint(stderr, usage)
		return exitUsage
	}
	switch args[0] {
	case "run", "check":
		fs := flag.NewFlagSet(args[0], flag.ContinueOnError)
		fs.SetOutput(stderr)
		cfgFile := fs.String("config", "configs/gateway.yaml", "the gateway configuration `file` (YAML); relative paths in it are relative to it")
		fs.Usage = func() {
			fmt.Fprintf(stderr, "Usage: gateway %s [flags]\n\nFlags:\n", args[0])
			fs.PrintDefaults()
		}
		if err := fs.Parse(args[1:]); err != nil {
			if errors.Is(err, flag.ErrHelp) {
				return exitOK
			}
			return exitUsage
		}
		if fs.NArg() > 0 {
			fmt.Fprintf(stderr, "gateway %s: unexpected arguments %v\n", args[0], fs.Args())
			return exitUsage
		}
		if args[0] == "run" {
			// The collector's defaults while the deployment (a city's
			// inventory) loads; Run applies the configured settings.
			_, _ = gctune.Apply(gctune.Config{}, gctune.SystemEnv())
		}
		d, err := daemon.Load(*cfgFile)
		if err != nil {
			fmt.Fprintf(stderr, "gateway %s: invalid deployment:\n%v\n", args[0], err)
			return exitInvalid
		}
		if args[0] == "check" {
			d.Summary(stdout)
			fmt.Fprintln(stdout, "ok")
			return exitOK
		}
		return serve(d, stderr)
	case "version", "-version", "--version":
		fmt.Fprintf(stdout, "gateway %s (%s, %s/%s)\n", daemon.Version, runtime.Version(), runtime.GOOS, runtime.GOARCH)
		return exitOK
	case "help", "-h", "-help", "--help":
		fmt.Fprint(stdout, usage)
		return exitOK
	}
	fmt.Fprintf(stderr, "gateway: unknown command %q\n\n%s", args[0], usage)
	return exitUsage
}

func serve(d *daemon.Deployment, stderr io.Writer) int {
	log := daemon.NewLogger(d.Config.Log, stderr)
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	reload := make(chan struct{}, 1)
	go func() {
		for range hup {
			select {
			case reload <- struct{}{}:
			default:
			}
		}
	}()
	if err := daemon.Run(ctx, d, log, reload, nil); err != nil {
		log.Error("gateway failed", "err", err)
		return exitFailed
	}
	log.Info("gateway stopped")
	return exitOK
}

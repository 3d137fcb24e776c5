// Command rules is the rule author's tool, like promtool for citygw rules:
//
//	rules check RULE_FILES…      compile every rule; errors as file:line:col
//	rules test TEST_FILES…       run rule unit-test files
//	rules explain [flags] RULE_FILES…   why a rule fired or did not for an asset
//	rules backtest [flags] RULE_FILES…  the episodes rules would have opened over past telemetry
//	rules version
//
// Exit codes: 0 ok; 1 a check error or test failure, or explain/backtest
// failed otherwise; 2 usage (bad flags, unknown rule, asset or kind);
// 3 invalid rule files, inventory or input, or an unreachable data source.
package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"path/filepath"
	"runtime/debug"
	"strings"
	"time"

	"github.com/citygw/citygw/devices"
	"github.com/citygw/citygw/rules"
	"github.com/citygw/citygw/rules/history"
)

// Exit codes.
const (
	exitOK      = 0
	exitFailure = 1
	exitUsage   = 2
	exitInvalid = 3
)

const usage = `usage: rules COMMAND [flags] FILES…

Commands:
  check RULE_FILES…               compile rules against the shipped device profiles
  test TEST_FILES…                run rule unit tests (see rules/README.md)
  explain [flags] RULE_FILES…     evaluate a rule for one asset over its recent readings and
                                  show every sub-expression's value, the windows and the verdict
  backtest [flags] RULE_FILES…    run rules over a time range of past telemetry and list the
                                  episodes they would have opened
  version                         print the version
  help [COMMAND]                  this text, or a command's flags

Exit codes:
  0  ok
  1  check found errors, a test failed, or explain/backtest failed otherwise
  2  usage: bad flags or arguments, unknown rule, asset or kind
  3  invalid rule files, inventory or input file, or the data source (InfluxDB) unreachable
`

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
	defer stop()
	os.Exit(run(ctx, os.Args[1:], os.Stdout, os.Stderr))
}

func run(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 {
		fmt.Fprint(stderr, usage)
		return exitUsage
	}
	switch args[0] {
	case "check":
		if len(args) < 2 {
			fmt.Fprint(stderr, usage)
			return exitUsage
		}
		if err := rules.Check(args[1:]...); err != nil {
			fmt.Fprintln(stderr, err)
			return exitFailure
		}
		fmt.Fprintf(stdout, "%d file(s) OK\n", len(args)-1)
		return exitOK
	case "test":
		if len(args) < 2 {
			fmt.Fprint(stderr, usage)
			return exitUsage
		}
		if len(args) > 2 {
			fmt.Fprintf(stderr, "testing %d files…\n", len(args)-1)
		}
		if err := rules.RunTests(stdout, args[1:]...); err != nil {
			fmt.Fprintln(stderr, err)
			return exitFailure
		}
		return exitOK
	case "explain":
		return explain(ctx, args[1:], stdout, stderr)
	case "backtest":
		return backtest(ctx, args[1:], stdout, stderr)
	case "version", "-version", "--version":
		fmt.Fprintln(stdout, version())
		return exitOK
	case "help", "-h", "-help", "--help":
		if len(args) > 1 {
			switch args[1] {
			case "explain":
				return explain(ctx, []string{"-h"}, stdout, stdout)
			case "backtest":
				return backtest(ctx, []string{"-h"}, stdout, stdout)
			}
		}
		fmt.Fprint(stdout, usage)
		return exitOK
	}
	fmt.Fprintf(stderr, "rules: unknown command %q\n\n%s", args[0], usage)
	return exitUsage
}

// version reports the module version and VCS revision the binary was
// built from.
func version() string {
	bi, ok := debug.ReadBuildInfo()
	if !ok {
		return "rules (unknown version)"
	}
	v := bi.Main.Version
	var rev, dirty, when string
	for _, s := range bi.Settings {
		switch s.Key {
		case "vcs.revision":
			rev = s.Value
		case "vcs.modified":
			if s.Value == "true" {
				dirty = "+dirty"
			}
		case "vcs.time":
			when = s.Value
		}
	}
	out := "rules " + v
	if rev != "" {
		out += fmt.Sprintf(" (%s%s %s)", rev[:min(12, len(rev))], dirty, when)
	}
	return out + " " + bi.GoVersion
}

// sourceFlags are the data source flags explain and backtest share.
type sourceFlags struct {
	influx, db, rp, input, inventory, tz, testCase string
	chunk, tick                                    time.Duration
	json                                           bool
}

func (sf *sourceFlags) register(fs *flag.FlagSet) {
	fs.StringVar(&sf.influx, "influx", "", "InfluxDB 1.x `URL` to read telemetry from, e.g. http://127.0.0.1:8086 (user:password@ for basic auth)")
	fs.StringVar(&sf.db, "db", "citygw", "InfluxDB `database`")
	fs.StringVar(&sf.rp, "rp", "", "InfluxDB retention `policy` (default: the database's default)")
	fs.StringVar(&sf.input, "input", "", "read telemetry from `FILE` instead of InfluxDB: line protocol (.lp, .txt) or a rule unit-test file (.yaml, .yml; its assets replace -inventory)")
	fs.StringVar(&sf.testCase, "case", "", "with a unit-test -input: the test case `name` (default: the first)")
	fs.StringVar(&sf.inventory, "inventory", "", "asset inventory `FILE` (YAML or CSV, as the gateway's); required unless -input is a unit-test file")
	fs.StringVar(&sf.tz, "tz", "", "the city's time `zone` for hour(), between(), … (IANA name; default UTC, or the unit-test file's location)")
	fs.DurationVar(&sf.chunk, "chunk", time.Hour, "query InfluxDB this much `time` at once (readings of a span are merged by time)")
	fs.DurationVar(&sf.tick, "tick", 10*time.Second, "engine tick in reading `time` (absence, for and keep_firing_for are judged on ticks between readings)")
	fs.BoolVar(&sf.json, "json", false, "print JSON for machines instead of text")
}

// setup is what both commands need: catalog, inventory, source, location
// and rule files.
type setup struct {
	cat   *devices.Catalog
	inv   *devices.Inventory
	src   rules.Source
	loc   *time.Location
	files []string
	test  *rules.TestInput
}

// usageError is a problem with the command line.
type usageError struct{ msg string }

func (e *usageError) Error() string { return e.msg }

func (sf *sourceFlags) open(ctx context.Context, files []string) (*setup, error) {
	s := &setup{files: files, loc: time.UTC}
	var err error
	if s.cat, err = devices.LoadBuiltinCatalog(); err != nil {
		return nil, fmt.Errorf("%w: loading the device catalog: %w", rules.ErrInvalidRules, err)
	}
	if (sf.influx == "") == (sf.input == "") {
		return nil, &usageError{"give exactly one of -influx URL or -input FILE"}
	}
	isTest := false
	if sf.input != "" {
		ext := strings.ToLower(filepath.Ext(sf.input))
		isTest = ext == ".yaml" || ext == ".yml"
	}
	if isTest {
		in, err := rules.LoadTestInput(s.cat, sf.input, sf.testCase)
		if err != nil {
			return nil, fmt.Errorf("%w: %w", rules.ErrSource, err)
		}
		s.test, s.inv, s.src, s.loc = in, in.Inventory, in.Readings, in.Location
		if len(s.files) == 0 {
			s.files = in.RuleFiles
		}
	} else {
		if sf.inventory == "" {
			return nil, &usageError{"-inventory FILE is required (the assets' positions and attributes)"}
		}
		if s.inv, err = devices.LoadInventory(sf.inventory, s.cat); err != nil {
			return nil, fmt.Errorf("%w: %w", rules.ErrSource, err)
		}
		if sf.input != "" {
			lp, err := history.ReadLineProtocolFile(sf.input)
			if err != nil {
				return nil, fmt.Errorf("%w: %w", rules.ErrSource, err)
			}
			s.src = lp
		} else {
			db := &history.InfluxDB{URL: sf.influx, DB: sf.db, RP: sf.rp, Chunk: sf.chunk}
			pctx, cancel := context.WithTimeout(ctx, 10*time.Second)
			err := db.Ping(pctx)
			cancel()
			if err != nil {
				return nil, fmt.Errorf("%w: %w", rules.ErrSource, err)
			}
			s.src = db
		}
	}
	if sf.tz != "" {
		if s.loc, err = time.LoadLocation(sf.tz); err != nil {
			return nil, &usageError{fmt.Sprintf("-tz: %v", err)}
		}
	}
	if len(s.files) == 0 {
		return nil, &usageError{"give the rule files to evaluate"}
	}
	return s, nil
}

// parseTime reads a time flag: RFC 3339, "now", or now minus a duration
// ("-2h").
func parseTime(s string, now time.Time) (time.Time, error) {
	switch {
	case s == "now":
		return now, nil
	case strings.HasPrefix(s, "-"):
		d, err := time.ParseDuration(s[1:])
		if err != nil {
			return time.Time{}, fmt.Errorf("%q: want RFC 3339 (2026-06-21T22:00:00+08:00), now, or -DURATION", s)
		}
		return now.Add(-d), nil
	}
	t, err := time.Parse(time.RFC3339Nano, s)
	if err != nil {
		return time.Time{}, fmt.Errorf("%q: want RFC 3339 (2026-06-21T22:00:00+08:00), now, or -DURATION", s)
	}
	return t, nil
}

// exitCode maps an error to the documented exit codes.
func exitCode(stderr io.Writer, err error) int {
	fmt.Fprintln(stderr, "rules:", err)
	var ue *usageError
	switch {
	case errors.As(err, &ue), errors.Is(err, rules.ErrArgs):
		return exitUsage
	case errors.Is(err, rules.ErrInvalidRules), errors.Is(err, rules.ErrSource):
		return exitInvalid
	}
	return exitFailure
}

func newFlagSet(name, synopsis, about string, stderr io.Writer) *flag.FlagSet {
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() {
		fmt.Fprintf(fs.Output(), "usage: rules %s\n\n%s\nFlags:\n", synopsis, about)
		fs.PrintDefaults()
		fmt.Fprint(fs.Output(), "\nExit codes: 0 ok; 1 failed otherwise; 2 usage, unknown rule, asset or kind; 3 invalid rule files,\ninventory or input, or InfluxDB unreachable.\n")
	}
	return fs
}

func parseFlags(fs *flag.FlagSet, args []string) (int, bool) {
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return exitOK, false
		}
		return exitUsage, false
	}
	return 0, true
}

const explainAbout = `Replays the asset's recent readings (its whole group's for a group rule) through the
rule engine with all RULE_FILES loaded, then evaluates the rule's condition at the asset's
last reading and prints every sub-expression with its value, the samples each window
function aggregated, the episode's state changes over the replay and the verdict at -at
(firing since…, pending since… and when it would fire, or why not). With a unit-test file
as -input the rule files default to the test's rule_files.
`

func explain(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	var sf sourceFlags
	var rule, asset, at string
	var lookback time.Duration
	fs := newFlagSet("explain", "explain -rule ID -asset ID [-at TIME] (-influx URL [-db NAME] | -input FILE) [flags] RULE_FILES…", explainAbout, stderr)
	fs.StringVar(&rule, "rule", "", "the rule `id` to explain (required)")
	fs.StringVar(&asset, "asset", "", "the asset `id` to explain it for (required)")
	fs.StringVar(&at, "at", "", "explain the state at this `time`: RFC 3339, now, or -DURATION before now (default now; the last step of a unit-test input)")
	fs.DurationVar(&lookback, "lookback", 0, "replay this much history before -at (default: the rule's longest window + for + keep_firing_for, at least 15m)")
	sf.register(fs)
	if code, ok := parseFlags(fs, args); !ok {
		return code
	}
	if rule == "" || asset == "" {
		fmt.Fprintln(stderr, "rules explain: -rule and -asset are required")
		fs.Usage()
		return exitUsage
	}
	s, err := sf.open(ctx, fs.Args())
	if err != nil {
		return exitCode(stderr, err)
	}
	when := time.Now()
	if s.test != nil {
		when = s.test.End
	}
	if at != "" {
		if when, err = parseTime(at, time.Now()); err != nil {
			return exitCode(stderr, &usageError{"-at " + err.Error()})
		}
	}
	if s.test != nil && lookback == 0 && when.After(s.test.Start) {
		lookback = when.Sub(s.test.Start) // the whole test case up to -at
	}
	ex, err := rules.Explain(ctx, s.cat, s.inv, s.files, s.src, rules.ExplainOptions{Rule: rule, Asset: asset, At: when,
		Lookback: lookback, Location: s.loc, Tick: sf.tick})
	if err != nil {
		return exitCode(stderr, err)
	}
	if sf.json {
		enc := json.NewEncoder(stdout)
		enc.SetIndent("", "  ")
		if err := enc.Encode(ex); err != nil {
			return exitCode(stderr, err)
		}
		return exitOK
	}
	rules.WriteExplanation(stdout, ex)
	return exitOK
}

const backtestAbout = `Runs RULE_FILES over past telemetry from -from to -to as a gateway would have run them:
readings in time order per asset, the engine ticking as reading time passes (so absence
rules, for and keep_firing_for work), and lists the episodes that would have fired (and
opened a case unless shadow or muted) with start, fire and clear times and counts per
rule. Assets outside -kind/-asset are left out of the engine's inventory: they are not
reported silent and do not count in group sizes. Progress goes to stderr.
`

func backtest(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	var sf sourceFlags
	var from, to, assets, kinds, ruleIDs string
	var quiet bool
	fs := newFlagSet("backtest", "backtest -from TIME -to TIME (-influx URL [-db NAME] | -input FILE) [flags] RULE_FILES…", backtestAbout, stderr)
	fs.StringVar(&from, "from", "", "start of the range (inclusive) `TIME`: RFC 3339, now, or -DURATION before now (required)")
	fs.StringVar(&to, "to", "now", "end of the range (exclusive) `TIME`: RFC 3339, now, or -DURATION before now")
	fs.StringVar(&assets, "asset", "", "only these asset `ids` (comma-separated)")
	fs.StringVar(&kinds, "kind", "", "only these `kinds` (comma-separated; default: the kinds the rules watch that the inventory has)")
	fs.StringVar(&ruleIDs, "rule", "", "report only these rule `ids` (comma-separated; all rules still run, for inhibition)")
	fs.BoolVar(&quiet, "quiet", false, "no progress on stderr")
	sf.register(fs)
	if code, ok := parseFlags(fs, args); !ok {
		return code
	}
	if from == "" {
		fmt.Fprintln(stderr, "rules backtest: -from is required")
		fs.Usage()
		return exitUsage
	}
	now := time.Now()
	f, err := parseTime(from, now)
	if err != nil {
		return exitCode(stderr, &usageError{"-from " + err.Error()})
	}
	t, err := parseTime(to, now)
	if err != nil {
		return exitCode(stderr, &usageError{"-to " + err.Error()})
	}
	s, err := sf.open(ctx, fs.Args())
	if err != nil {
		return exitCode(stderr, err)
	}
	opts := rules.BacktestOptions{From: f, To: t, Kinds: splitList(kinds), Assets: splitList(assets), Rules: splitList(ruleIDs),
		Location: s.loc, Tick: sf.tick}
	if !quiet {
		start := time.Now()
		opts.Progress = func(p rules.BacktestProgress) {
			fmt.Fprintf(stderr, "\rbacktest: %d points, %5.1f%% of the range (at %s), %s", p.Points, 100*p.Fraction,
				p.Time.Format(time.RFC3339), time.Since(start).Round(time.Second))
			if p.Fraction >= 1 {
				fmt.Fprintln(stderr)
			}
		}
	}
	rep, err := rules.Backtest(ctx, s.cat, s.inv, s.files, s.src, opts)
	if err != nil {
		return exitCode(stderr, err)
	}
	if sf.json {
		enc := json.NewEncoder(stdout)
		enc.SetIndent("", "  ")
		if err := enc.Encode(rep); err != nil {
			return exitCode(stderr, err)
		}
		return exitOK
	}
	rules.WriteBacktest(stdout, rep)
	return exitOK
}

func splitList(s string) []string {
	var out []string
	for _, p := range strings.Split(s, ",") {
		if p = strings.TrimSpace(p); p != "" {
			out = append(out, p)
		}
	}
	return out
}

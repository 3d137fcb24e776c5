package daemon

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"reflect"
	"sort"
	"strings"

	"github.com/citygw/citygw/gateway/config"
)

// Changes is what differs between the running deployment and a newly
// loaded one, sorted by how it is applied.
type Changes struct {
	// Restart lists what needs the components rebuilt (sources, pipeline,
	// writer, WAL, rule engine, case client): config sections by their YAML
	// key, and "inventory", "profiles" or "codes" when those files changed.
	Restart []string
	// Rules: the rule files (their list or contents) or rules.silences
	// changed; applied in place by the running rule engine when nothing
	// needs a restart.
	Rules bool
	// AdminListen: admin.listen moved; the admin listener is moved after the
	// reload has answered.
	AdminListen bool
	// AdminToken: the admin token (or the secret it comes from) changed;
	// replaced in place.
	AdminToken bool
	// Runtime: the garbage collector's settings (runtime) changed; applied
	// in place.
	Runtime bool
	// NextStart lists settings that apply only when the process starts
	// again (log).
	NextStart []string
}

// None reports whether nothing changed.
func (c Changes) None() bool {
	return len(c.Restart) == 0 && !c.Rules && !c.AdminListen && !c.AdminToken && !c.Runtime && len(c.NextStart) == 0
}

// Lines describes the changes for the log and the reload's answer.
func (c Changes) Lines() []string {
	var out []string
	if len(c.Restart) > 0 {
		out = append(out, "components restarted for: "+strings.Join(c.Restart, ", "))
	}
	if c.Rules {
		if len(c.Restart) > 0 {
			out = append(out, "rules: reloaded with the components")
		} else {
			out = append(out, "rules: reloaded in place")
		}
	}
	if c.AdminToken {
		out = append(out, "admin.token: replaced")
	}
	if c.Runtime {
		out = append(out, "runtime: garbage collector settings applied in place")
	}
	if c.AdminListen {
		out = append(out, "admin.listen: the admin listener moves once this answer is sent")
	}
	for _, s := range c.NextStart {
		out = append(out, s+": changed; applies at the next process start")
	}
	if len(out) == 0 {
		out = append(out, "nothing changed")
	}
	return out
}

// Diff compares the running deployment old with a newly loaded one.
func Diff(old, nw *Deployment) Changes {
	var ch Changes
	ov, nv := reflect.ValueOf(*old.Config), reflect.ValueOf(*nw.Config)
	t := ov.Type()
	for i := range t.NumField() {
		name, _, _ := strings.Cut(t.Field(i).Tag.Get("yaml"), ",")
		if name == "-" || name == "" {
			continue
		}
		switch name {
		case "gateway":
			og, ng := old.Config.Gateway, nw.Config.Gateway
			og.Location, ng.Location = nil, nil // compared by Timezone
			if og != ng {
				ch.Restart = append(ch.Restart, name)
			}
		case "admin":
			ch.AdminListen = old.Config.Admin.Listen != nw.Config.Admin.Listen
			ch.AdminToken = old.sums["admin.token"] != nw.sums["admin.token"]
		case "runtime":
			ch.Runtime = !reflect.DeepEqual(old.Config.Runtime, nw.Config.Runtime)
		case "log":
			if old.Config.Log != nw.Config.Log {
				ch.NextStart = append(ch.NextStart, name)
			}
		case "rules":
			or, nr := old.Config.Rules, nw.Config.Rules
			if !reflect.DeepEqual(or.Files, nr.Files) || !reflect.DeepEqual(or.Silences, nr.Silences) {
				ch.Rules = true
			}
			for _, k := range []struct {
				name    string
				changed bool
			}{
				{"rules.eval_budget", !reflect.DeepEqual(or.EvalBudget, nr.EvalBudget)},
				{"rules.quarantine_after", or.QuarantineAfter != nr.QuarantineAfter},
				{"rules.quarantine_window", or.QuarantineWindow != nr.QuarantineWindow},
				{"rules.display_samples", or.DisplayHistory() != nr.DisplayHistory()},
				{"rules.absence", or.Absence != nr.Absence},
			} {
				if k.changed {
					ch.Restart = append(ch.Restart, k.name)
				}
			}
		default:
			if !reflect.DeepEqual(ov.Field(i).Interface(), nv.Field(i).Interface()) || old.sums[name] != nw.sums[name] {
				ch.Restart = append(ch.Restart, name)
			}
		}
	}
	for _, f := range []string{"inventory", "profiles", "codes"} {
		if old.sums["file:"+f] != nw.sums["file:"+f] && !contains(ch.Restart, f) {
			ch.Restart = append(ch.Restart, f)
		}
	}
	if old.sums["file:rules"] != nw.sums["file:rules"] {
		ch.Rules = true
	}
	if (len(old.RuleFiles) > 0) != (len(nw.RuleFiles) > 0) {
		// The rule engine starts or goes away with the components.
		ch.Restart = append(ch.Restart, "rules.files")
	}
	sort.Strings(ch.Restart)
	return ch
}

func contains(ss []string, s string) bool {
	for _, x := range ss {
		if x == s {
			return true
		}
	}
	return false
}

// fingerprint records, before the loaders read them, a digest of every
// file the deployment is built from and of every resolved secret (whose
// source file or variable may change while the config does not), so that a
// reload can tell what changed. Digesting before loading errs on the safe
// side: a file changed in between differs on the next reload.
func fingerprint(c *config.Config) map[string]string {
	sums := map[string]string{}
	sums["file:inventory"] = digestFiles(c.Inventory)
	var profiles []string
	for _, dir := range c.Profiles {
		entries, err := os.ReadDir(dir)
		if err != nil {
			profiles = append(profiles, dir) // the loader reports it
			continue
		}
		for _, e := range entries {
			if !e.IsDir() && (strings.HasSuffix(e.Name(), ".yaml") || strings.HasSuffix(e.Name(), ".yml")) {
				profiles = append(profiles, filepath.Join(dir, e.Name()))
			}
		}
	}
	sums["file:profiles"] = digestFiles(profiles...)
	if files, err := c.RuleFiles(); err == nil {
		sums["file:rules"] = digestFiles(files...)
	} else {
		sums["file:rules"] = "error: " + err.Error()
	}
	if c.Cases != nil {
		sums["file:codes"] = digestFiles(c.Cases.Codes)
	}
	secret := func(key string, ss ...config.Secret) {
		h := sha256.New()
		for _, s := range ss {
			v, err := s.Resolve()
			if err != nil {
				v = "error: " + err.Error()
			}
			fmt.Fprintf(h, "%d:%s", len(v), v)
		}
		sums[key] = hex.EncodeToString(h.Sum(nil))
	}
	secret("admin.token", c.Admin.Token)
	secret("influxdb", c.InfluxDB.Token)
	if c.MQTT != nil {
		secret("mqtt", c.MQTT.Password)
	}
	if c.Cases != nil {
		names := make([]string, 0, len(c.Cases.Secrets))
		for n := range c.Cases.Secrets {
			names = append(names, n)
		}
		sort.Strings(names)
		var ss []config.Secret
		for _, n := range names {
			ss = append(ss, c.Cases.Secrets[n].APIKey, c.Cases.Secrets[n].Secret)
		}
		secret("cases", ss...)
	}
	return sums
}

// digestFiles hashes the names and contents of files, in order; a file
// that cannot be read contributes its error.
func digestFiles(files ...string) string {
	h := sha256.New()
	for _, f := range files {
		fmt.Fprintf(h, "%d:%s\n", len(f), f)
		fh, err := os.Open(f)
		if err != nil {
			fmt.Fprintf(h, "error: %v\n", err)
			continue
		}
		n, err := io.Copy(h, fh)
		fh.Close()
		if err != nil {
			fmt.Fprintf(h, "error: %v\n", err)
		}
		fmt.Fprintf(h, "\n%d\n", n)
	}
	return hex.EncodeToString(h.Sum(nil))
}

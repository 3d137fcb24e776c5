package rules

import (
	"os"
	"path/filepath"
	"testing"
)

// FuzzLoad feeds arbitrary rule files to the loader and compiler: they must
// return errors, never panic or hang.
func FuzzLoad(f *testing.F) {
	files, _ := filepath.Glob("../configs/rules/*.yaml")
	for _, p := range files {
		if data, err := os.ReadFile(p); err == nil {
			f.Add(data)
		}
	}
	f.Add([]byte(ruleHead + "    when: avg(current_a, \"10m\") > 1 && prev(relay_on)\n"))
	f.Add([]byte(ruleHead + "    when: |\n      between(\"22:00\", \"06:00\") &&\n      asset.circuit == \"C1\"\n    group_by: [circuit]\n    group: {percent: 50}\n"))
	f.Add([]byte("rules:\n  - id: a.b\n    kind: waste_bin\n    absent: 1h\n    severity: info\n    case: {service: s, title: '{{ .Asset.ID'}\n"))
	cat := testCatalog(f)
	inv := testInventory(f, cat, 2)
	f.Fuzz(func(t *testing.T, data []byte) {
		pf, err := parseRuleFile("fuzz.yaml", data)
		if err != nil {
			return
		}
		c := newCompiler(cat, inv)
		c.compileFile(pf, map[string]string{})
	})
}

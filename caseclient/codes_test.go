package caseclient

import (
	"os"
	"path/filepath"
	"sort"
	"strings"
	"testing"

	"github.com/citygw/citygw/devices/yamlconf"
	"github.com/citygw/citygw/rules"
)

const goodTable = `city: test
components:
  streetlight: {major: "01", sub: "18", name: {zh: 路灯, en: streetlight}}
services:
  streetlight_fault:
    type: component
    name: {zh: 路灯故障, en: streetlight fault}
    condition: dark
    deadline: 2 working days
    closure: lit
    department: lighting
    service_codes: {default: SL-FAULT, desk2: "0118"}
  bin_overflow:
    type: 事件
    major: "01"
    sub: "02"
    class_name: {zh: 市容环境, en: city environment}
    name: {zh: 垃圾满溢, en: overflowing bin}
    condition: full
    deadline: 4 hours
    closure: emptied
    department: sanitation
    service_codes: {default: BIN-FULL}
`

func TestParseCodeTable(t *testing.T) {
	ct, err := ParseCodeTable("t.yaml", []byte(goodTable))
	if err != nil {
		t.Fatal(err)
	}
	sl := ct.Service("streetlight_fault")
	if sl.Type != TypeComponent || sl.Deadline.String() != "2 working days" || sl.Deadline.ZH() != "2个工作日" {
		t.Errorf("streetlight_fault = %+v", sl)
	}
	if sl.ServiceCode("desk2") != "0118" || sl.ServiceCode("other") != "SL-FAULT" {
		t.Errorf("service codes: %q %q", sl.ServiceCode("desk2"), sl.ServiceCode("other"))
	}
	if cl, ok := ct.Class(sl, "streetlight"); !ok || cl.Code() != "0118" {
		t.Errorf("component class from the kind: %+v %v", cl, ok)
	}
	bin := ct.Service("bin_overflow")
	if bin.Type != TypeEvent || bin.Deadline.ZH() != "4小时" {
		t.Errorf("bin_overflow = %+v", bin)
	}
	if cl, _ := ct.Class(bin, "waste_bin"); cl.Code() != "0102" || cl.Name.ZH != "市容环境" {
		t.Errorf("event class: %+v", cl)
	}
	if err := ct.Check([]string{"streetlight_fault", "gas_leak"}, nil); err == nil || !strings.Contains(err.Error(), `"gas_leak"`) {
		t.Errorf("Check should name the missing service, got %v", err)
	}
}

func TestParseCodeTableErrors(t *testing.T) {
	cases := []struct {
		name, old, new string
		want           string // substring, with file:line:col
	}{
		{"unknown key", "    closure: lit\n", "    closure: lit\n    colour: red\n", "t.yaml:11:"},
		{"duplicate key", "    closure: lit\n", "    closure: lit\n    closure: dark\n", "t.yaml:11:"},
		{"major not digits", `major: "01", sub: "18"`, `major: "1", sub: "18"`, `t.yaml:3:`},
		{"event sub too long", `sub: "02"`, `sub: "002"`, `t.yaml:16:10: services.bin_overflow.sub: want 2 digits, got "002"`},
		{"event without classes", "    major: \"01\"\n    sub: \"02\"\n", "", `services.bin_overflow.major: want 2 digits, got ""`},
		{"bad type", "type: 事件", "type: incident", `t.yaml:14:11: services.bin_overflow.type: want component (部件) or event (事件)`},
		{"bad deadline", "deadline: 4 hours", "deadline: soon", `t.yaml:20:15: services.bin_overflow.deadline: invalid deadline "soon"`},
		{"working minutes", "deadline: 4 hours", "deadline: 4 working minutes", `services.bin_overflow.deadline: invalid deadline`},
		{"missing department", "    department: sanitation\n", "", `services.bin_overflow.department: required`},
		{"no service codes", "    service_codes: {default: BIN-FULL}\n", "", `services.bin_overflow.service_codes: at least one`},
		{"bad service code", "{default: BIN-FULL}", "{default: \"BIN FULL\"}", `services.bin_overflow.service_codes.default: invalid service_code`},
		{"missing name", "name: {zh: 垃圾满溢, en: overflowing bin}", "name: {zh: 垃圾满溢}", `services.bin_overflow.name: zh and en are required`},
		{"no city", "city: test\n", "", `t.yaml: city: required`},
		{"duration not a map", "services:\n", "services: 3\n", `t.yaml:`},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			src := strings.Replace(goodTable, c.old, c.new, 1)
			if src == goodTable {
				t.Fatalf("test case does not change the table")
			}
			_, err := ParseCodeTable("t.yaml", []byte(src))
			if err == nil {
				t.Fatalf("no error")
			}
			if !strings.Contains(err.Error(), c.want) {
				t.Fatalf("error %q does not contain %q", err, c.want)
			}
			if _, ok := err.(yamlconf.Errors); !ok {
				if _, ok := err.(*yamlconf.Error); !ok {
					t.Fatalf("error is %T, want a positioned yamlconf error", err)
				}
			}
		})
	}
}

func TestParseDeadline(t *testing.T) {
	cases := []struct {
		in, out, zh string
	}{
		{"4 working hours", "4 working hours", "4工作小时"},
		{"1 working day", "1 working day", "1个工作日"},
		{"24 hours", "24 hours", "24小时"},
		{"3 Days", "3 days", "3天"},
		{"2 working d", "2 working days", "2个工作日"},
	}
	for _, c := range cases {
		d, err := parseDeadline(c.in)
		if err != nil || d.String() != c.out || d.ZH() != c.zh {
			t.Errorf("parseDeadline(%q) = %v %q %q, want %q %q", c.in, err, d.String(), d.ZH(), c.out, c.zh)
		}
	}
	for _, bad := range []string{"", "4", "hours", "0 hours", "-1 days", "4 weeks", "4 working calendar days", "x days"} {
		if _, err := parseDeadline(bad); err == nil {
			t.Errorf("parseDeadline(%q) accepted", bad)
		}
	}
}

// The shipped table covers every service the shipped rules open, and
// resolves a class for every kind those rules watch.
func TestShippedCodeTableCoversShippedRules(t *testing.T) {
	ct, err := LoadCodeTable("../configs/citycodes.yaml")
	if err != nil {
		t.Fatal(err)
	}
	files, _ := filepath.Glob("../configs/rules/*.yaml")
	if len(files) == 0 {
		t.Fatal("no shipped rule files")
	}
	var services []string
	for _, f := range files {
		data, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		var rf rules.RuleFile
		if _, err := yamlconf.Decode(f, data, &rf); err != nil {
			t.Fatal(err)
		}
		for _, r := range rf.Rules {
			services = append(services, r.Case.Service)
			svc := ct.Service(r.Case.Service)
			if svc == nil {
				continue
			}
			if cl, ok := ct.Class(svc, r.Kind); !ok || !digits(cl.Major, 2) || !digits(cl.Sub, 2) {
				t.Errorf("rule %s: no class for service %s and kind %s", r.ID, r.Case.Service, r.Kind)
			}
		}
	}
	sort.Strings(services)
	if err := ct.Check(services, []string{"desk", "webhook"}); err != nil {
		t.Fatal(err)
	}
}

func FuzzParseCodeTable(f *testing.F) {
	f.Add([]byte(goodTable))
	if data, err := os.ReadFile("../configs/citycodes.yaml"); err == nil {
		f.Add(data)
	}
	f.Add([]byte("city: x\nservices: {a: {type: event, major: \"1\"}}\n"))
	f.Add([]byte("services: [1, 2]\n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		ct, err := ParseCodeTable("fuzz.yaml", data)
		if err != nil {
			if ct != nil {
				t.Fatal("a table returned with an error")
			}
			return
		}
		for name, s := range ct.Services {
			if s == nil || s.Name != name || s.Deadline.N <= 0 || len(s.Codes) == 0 {
				t.Fatalf("accepted an invalid service %q: %+v", name, s)
			}
			if s.Type != TypeComponent && s.Type != TypeEvent {
				t.Fatalf("accepted type %q", s.Type)
			}
			if s.Major != "" && (!digits(s.Major, 2) || !digits(s.Sub, 2)) {
				t.Fatalf("accepted classes %q/%q", s.Major, s.Sub)
			}
		}
	})
}

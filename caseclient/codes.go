package caseclient

import (
	"fmt"
	"os"
	"sort"
	"strconv"
	"strings"

	"github.com/citygw/citygw/devices/yamlconf"
)

// Case types of Chinese digital city management.
const (
	TypeComponent = "component" // 部件: a physical city component is faulty
	TypeEvent     = "event"     // 事件: something happened (overflow, fire, leak)
)

// Name is a name in Chinese and English.
type Name struct {
	ZH string `yaml:"zh" json:"zh"`
	EN string `yaml:"en" json:"en"`
}

// Class is a major class + subclass, each two digits.
type Class struct {
	Major string `yaml:"major" json:"major"`
	Sub   string `yaml:"sub" json:"sub"`
	Name  Name   `yaml:"name" json:"name"`
}

// Code returns the four-digit class code (major + sub).
func (c Class) Code() string { return c.Major + c.Sub }

// Deadline is a handling deadline: N hours or days, working or calendar.
type Deadline struct {
	N       int
	Unit    string // "hours" or "days"
	Working bool
}

// String writes the deadline as it is written in the table, e.g. "2 working days".
func (d Deadline) String() string {
	if d.N == 0 {
		return ""
	}
	w := ""
	if d.Working {
		w = "working "
	}
	u := d.Unit
	if d.N == 1 {
		u = strings.TrimSuffix(u, "s")
	}
	return fmt.Sprintf("%d %s%s", d.N, w, u)
}

// ZH writes the deadline in Chinese, e.g. "2个工作日", "4工作小时", "24小时".
func (d Deadline) ZH() string {
	switch {
	case d.N == 0:
		return ""
	case d.Unit == "days" && d.Working:
		return fmt.Sprintf("%d个工作日", d.N)
	case d.Unit == "days":
		return fmt.Sprintf("%d天", d.N)
	case d.Working:
		return fmt.Sprintf("%d工作小时", d.N)
	}
	return fmt.Sprintf("%d小时", d.N)
}

// parseDeadline reads "<n> [working] hours|days".
func parseDeadline(s string) (Deadline, error) {
	f := strings.Fields(strings.ToLower(s))
	bad := fmt.Errorf("invalid deadline %q (want e.g. \"4 working hours\", \"2 working days\", \"24 hours\", \"3 days\")", s)
	if len(f) < 2 || len(f) > 3 {
		return Deadline{}, bad
	}
	n, err := strconv.Atoi(f[0])
	if err != nil || n <= 0 || n > 10000 {
		return Deadline{}, bad
	}
	d := Deadline{N: n}
	if len(f) == 3 {
		if f[1] != "working" {
			return Deadline{}, bad
		}
		d.Working = true
	}
	switch f[len(f)-1] {
	case "hour", "hours", "h":
		d.Unit = "hours"
	case "day", "days", "d":
		d.Unit = "days"
	default:
		return Deadline{}, bad
	}
	return d, nil
}

// Service is one row of the city's case-creation/closure table: what a rule's
// `case.service` opens.
type Service struct {
	Name       string            `yaml:"-" json:"service"`
	Type       string            `yaml:"type" json:"type"`
	Major      string            `yaml:"major,omitempty" json:"major,omitempty"` // event classes; components default to the asset kind's class
	Sub        string            `yaml:"sub,omitempty" json:"sub,omitempty"`
	Title      Name              `yaml:"name" json:"name"`
	ClassName  Name              `yaml:"class_name,omitempty" json:"class_name,omitempty"` // major class name, e.g. 市容环境
	Condition  string            `yaml:"condition" json:"condition"`                       // case-creation condition (立案条件)
	DeadlineS  string            `yaml:"deadline" json:"-"`                                // handling deadline (处置时限)
	Closure    string            `yaml:"closure" json:"closure"`                           // closure condition (结案条件)
	Department string            `yaml:"department" json:"department"`                     // responsible unit (责任单位)
	Codes      map[string]string `yaml:"service_codes" json:"-"`                           // Open311 service_code per sink name; "default" for the rest

	Deadline Deadline `yaml:"-" json:"-"`
	File     string   `yaml:"-" json:"-"`
	Line     int      `yaml:"-" json:"-"`
}

// ServiceCode returns the Open311 service_code of the service at the named sink.
func (s *Service) ServiceCode(sink string) string {
	if c, ok := s.Codes[sink]; ok {
		return c
	}
	return s.Codes["default"]
}

// CodeTable is a city's code table: the component classes of the asset kinds
// and the case services rules open.
type CodeTable struct {
	City       string            `yaml:"city"`
	Components map[string]*Class `yaml:"components"` // asset kind -> component class
	Services   map[string]*Service
	File       string
}

type codeFile struct {
	City       string              `yaml:"city"`
	Components map[string]*Class   `yaml:"components"`
	Services   map[string]*Service `yaml:"services"`
}

// Service returns the named service, or nil.
func (t *CodeTable) Service(name string) *Service { return t.Services[name] }

// Class returns the case class for service s and an asset of kind: the
// service's own classes, or for a component service without them the
// kind's component class.
func (t *CodeTable) Class(s *Service, kind string) (Class, bool) {
	if s.Major != "" {
		return Class{Major: s.Major, Sub: s.Sub, Name: s.ClassName}, true
	}
	if c := t.Components[kind]; c != nil {
		return *c, true
	}
	return Class{}, false
}

// Check reports the services (from rules) that the table lacks and the
// sinks a service has no service_code for.
func (t *CodeTable) Check(services []string, sinks []string) error {
	var errs []string
	for _, s := range services {
		sv := t.Services[s]
		if sv == nil {
			errs = append(errs, fmt.Sprintf("service %q is used by a rule but not in the code table %s", s, t.File))
			continue
		}
		for _, k := range sinks {
			if sv.ServiceCode(k) == "" {
				errs = append(errs, fmt.Sprintf("%s:%d: service %q has no service_code for sink %q (nor a default)", sv.File, sv.Line, s, k))
			}
		}
	}
	if len(errs) > 0 {
		return fmt.Errorf("code table: %s", strings.Join(errs, "; "))
	}
	return nil
}

// LoadCodeTable reads a city code table file (see configs/citycodes.yaml).
func LoadCodeTable(file string) (*CodeTable, error) {
	data, err := os.ReadFile(file)
	if err != nil {
		return nil, fmt.Errorf("reading city code table: %w", err)
	}
	return ParseCodeTable(file, data)
}

func digits(s string, n int) bool {
	if len(s) != n {
		return false
	}
	for i := 0; i < len(s); i++ {
		if s[i] < '0' || s[i] > '9' {
			return false
		}
	}
	return true
}

// ParseCodeTable decodes and validates a code table; every error names the
// file, line, column and field.
func ParseCodeTable(file string, data []byte) (*CodeTable, error) {
	var f codeFile
	doc, err := yamlconf.Decode(file, data, &f)
	if err != nil {
		return nil, err
	}
	var errs yamlconf.Errors
	add := func(path, field, format string, args ...any) {
		errs = append(errs, doc.Errorf(path, field, format, args...))
	}
	if strings.TrimSpace(f.City) == "" {
		add("$.city", "city", "required")
	}
	for _, kind := range sortedKeys(f.Components) {
		c, at := f.Components[kind], "$.components."+kind
		if c == nil {
			add(at, "components."+kind, "empty entry")
			continue
		}
		if !digits(c.Major, 2) {
			add(at+".major", "components."+kind+".major", "want 2 digits, got %q", c.Major)
		}
		if !digits(c.Sub, 2) {
			add(at+".sub", "components."+kind+".sub", "want 2 digits, got %q", c.Sub)
		}
		if c.Name.ZH == "" || c.Name.EN == "" {
			add(at+".name", "components."+kind+".name", "zh and en are required")
		}
	}
	if len(f.Services) == 0 {
		add("$.services", "services", "at least one service is required")
	}
	for _, name := range sortedKeys(f.Services) {
		s, at, fld := f.Services[name], "$.services."+name, "services."+name
		if s == nil {
			add(at, fld, "empty entry")
			continue
		}
		s.Name, s.File = name, file
		s.Line, _ = doc.Pos(at)
		switch s.Type {
		case "部件":
			s.Type = TypeComponent
		case "事件":
			s.Type = TypeEvent
		case TypeComponent, TypeEvent:
		default:
			add(at+".type", fld+".type", "want component (部件) or event (事件), got %q", s.Type)
		}
		if s.Major != "" || s.Sub != "" || s.Type == TypeEvent {
			if !digits(s.Major, 2) {
				add(at+".major", fld+".major", "want 2 digits, got %q", s.Major)
			}
			if !digits(s.Sub, 2) {
				add(at+".sub", fld+".sub", "want 2 digits, got %q", s.Sub)
			}
		}
		if s.Title.ZH == "" || s.Title.EN == "" {
			add(at+".name", fld+".name", "zh and en are required")
		}
		for key, v := range map[string]string{"condition": s.Condition, "closure": s.Closure, "department": s.Department} {
			if strings.TrimSpace(v) == "" {
				add(at+"."+key, fld+"."+key, "required")
			}
		}
		if s.Deadline, err = parseDeadline(s.DeadlineS); err != nil {
			add(at+".deadline", fld+".deadline", "%v", err)
		}
		if len(s.Codes) == 0 {
			add(at+".service_codes", fld+".service_codes", "at least one Open311 service_code (per sink name, or default) is required")
		}
		for _, sink := range sortedKeys(s.Codes) {
			if c := s.Codes[sink]; strings.TrimSpace(c) == "" || strings.ContainsAny(c, " \t\r\n,/?#") {
				add(at+".service_codes."+sink, fld+".service_codes."+sink, "invalid service_code %q", c)
			}
		}
	}
	if err := errs.Err(); err != nil {
		return nil, err
	}
	return &CodeTable{City: f.City, Components: f.Components, Services: f.Services, File: file}, nil
}

func sortedKeys[V any](m map[string]V) []string {
	ks := make([]string, 0, len(m))
	for k := range m {
		ks = append(ks, k)
	}
	sort.Strings(ks)
	return ks
}

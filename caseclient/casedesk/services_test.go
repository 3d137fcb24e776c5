package casedesk

import (
	"os"
	"slices"
	"strings"
	"testing"

	"github.com/goccy/go-yaml"
)

func TestParseServices(t *testing.T) {
	list := testServices(t)
	if len(list) != 3 || list[0].Code != "SL-FAULT" || list[1].Type != TypeBatch || list[2].Type != TypeBlackbox ||
		len(list[0].Attributes) != 6 || list[0].Attributes[3].Values[1].Key != "major" {
		t.Fatalf("testdata/services.yaml decoded as %+v", list)
	}
	tests := []struct {
		name, yaml, msg string
	}{
		{"unknown key", "- service_code: A\n  type: realtime\n  colour: red\n", "services.yaml:3"},
		{"bad type", "- service_code: A\n  type: sometimes\n", "services.yaml:1"},
		{"no code", "- service_name: A\n  type: batch\n", "without service_code"},
		{"bad datatype", "- service_code: A\n  type: batch\n  attributes: [{code: x, datatype: blob}]\n", "datatype"},
		{"list without values", "- service_code: A\n  type: batch\n  attributes: [{code: x, datatype: singlevaluelist}]\n", "no values"},
		{"attribute twice", "- service_code: A\n  type: batch\n  attributes: [{code: x, datatype: string}, {code: x, datatype: text}]\n", "twice"},
		{"service twice", "- {service_code: A, type: batch}\n- {service_code: A, type: batch}\n", "twice"},
		{"empty", "[]\n", "no services"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := ParseServices("services.yaml", []byte(tt.yaml))
			if err == nil || !strings.Contains(err.Error(), tt.msg) {
				t.Fatalf("error %v, want %q", err, tt.msg)
			}
		})
	}
}

// The built-in services must carry every Open311 service code of the demo
// city's code table, so the case client's cases are accepted out of the box.
func TestDefaultServicesMatchCityCodes(t *testing.T) {
	if err := checkServices(DefaultServices()); err != nil {
		t.Fatal(err)
	}
	data, err := os.ReadFile("../../configs/citycodes.yaml")
	if os.IsNotExist(err) {
		t.Skip("configs/citycodes.yaml not present")
	}
	if err != nil {
		t.Fatal(err)
	}
	var table struct {
		Services map[string]struct {
			ServiceCodes map[string]string `yaml:"service_codes"`
		} `yaml:"services"`
	}
	if err := yaml.Unmarshal(data, &table); err != nil {
		t.Fatal(err)
	}
	var codes []string
	for _, s := range DefaultServices() {
		codes = append(codes, s.Code)
	}
	if len(table.Services) == 0 {
		t.Fatal("no services in configs/citycodes.yaml")
	}
	for name, s := range table.Services {
		for sink, code := range s.ServiceCodes {
			if !slices.Contains(codes, code) {
				t.Errorf("service %s: service_code %q (sink %s) is not a built-in service", name, code, sink)
			}
		}
	}
}

// The attributes the case client sends pass the built-in definitions.
func TestDefaultServiceAttributes(t *testing.T) {
	svc := DefaultServices()[0]
	vals := map[string][]string{"case_key": {"cgw-ep1"}, "case_type": {"component"}, "severity": {"critical"},
		"first_seen": {"2026-01-15T10:00:00Z"}, "deadline": {"2 working days"}, "grid": {"31010100101"}}
	if err := validateAttributes(&svc, vals, nil); err != nil {
		t.Fatal(err)
	}
	delete(vals, "case_key")
	if err := validateAttributes(&svc, vals, nil); err == nil {
		t.Fatal("case_key not required")
	}
}

package casedesk

import (
	"fmt"
	"os"
	"slices"

	"github.com/citygw/citygw/devices/yamlconf"
)

// Service types (Open311 GeoReport v2): what POST /requests.json answers.
const (
	TypeRealtime = "realtime" // answers with a service_request_id
	TypeBatch    = "batch"    // answers with a token that resolves to an id later
	TypeBlackbox = "blackbox" // answers with no id at all
)

// Attribute datatypes (Open311 GeoReport v2 service definitions).
const (
	DatatypeString          = "string"
	DatatypeNumber          = "number"
	DatatypeDatetime        = "datetime"
	DatatypeText            = "text"
	DatatypeSingleValueList = "singlevaluelist"
	DatatypeMultiValueList  = "multivaluelist"
)

// Service is one entry of GET /services.json with its definition (the
// attributes of GET /services/{code}.json). YAML service files use the same
// key names as the JSON wire format.
type Service struct {
	Code        string      `json:"service_code" yaml:"service_code"`
	Name        string      `json:"service_name" yaml:"service_name"`
	Description string      `json:"description" yaml:"description"`
	Group       string      `json:"group" yaml:"group"`
	Type        string      `json:"type" yaml:"type"`
	Keywords    []string    `json:"keywords" yaml:"keywords"`
	Agency      string      `json:"agency_responsible,omitempty" yaml:"agency_responsible"`
	Attributes  []Attribute `json:"attributes,omitempty" yaml:"attributes"`
}

// Attribute is one attribute of a service definition.
type Attribute struct {
	Variable            bool             `json:"variable" yaml:"variable"`
	Code                string           `json:"code" yaml:"code"`
	Datatype            string           `json:"datatype" yaml:"datatype"`
	Required            bool             `json:"required" yaml:"required"`
	DatatypeDescription string           `json:"datatype_description" yaml:"datatype_description"`
	Order               int              `json:"order" yaml:"order"`
	Description         string           `json:"description" yaml:"description"`
	Values              []AttributeValue `json:"values,omitempty" yaml:"values"`
}

// AttributeValue is one allowed value of a list attribute.
type AttributeValue struct {
	Key  string `json:"key" yaml:"key"`
	Name string `json:"name" yaml:"name"`
}

// Attribute codes of the built-in services. The case key is required: it is
// how a case client finds its case again after a timeout (Open311 has no
// idempotency mechanism of its own).
const (
	AttrCaseKey       = "case_key"
	AttrComponentCode = "component_code"
	AttrSeverity      = "severity"
)

// commonAttributes are the attributes every built-in service defines.
func commonAttributes() []Attribute {
	return []Attribute{
		{Variable: true, Code: AttrCaseKey, Datatype: DatatypeString, Required: true, Order: 1,
			Description: "Case key: stable identity of the anomaly episode (rule, group, episode start)"},
		{Variable: true, Code: "asset_id", Datatype: DatatypeString, Order: 2, Description: "Asset id in the gateway inventory"},
		{Variable: true, Code: AttrComponentCode, Datatype: DatatypeString, Order: 3,
			DatatypeDescription: "16 digits: district(6) class(2) subclass(2) serial(6)", Description: "Component (部件) code"},
		{Variable: true, Code: "grid_code", Datatype: DatatypeString, Order: 4, Description: "Unit-grid cell code"},
		{Variable: true, Code: "district", Datatype: DatatypeString, Order: 5, Description: "District code (GB/T 2260)"},
		{Variable: true, Code: "rule_id", Datatype: DatatypeString, Order: 6, Description: "Rule that found the anomaly"},
		{Variable: true, Code: AttrSeverity, Datatype: DatatypeSingleValueList, Order: 7, Description: "Severity",
			Values: []AttributeValue{{"critical", "Critical"}, {"major", "Major"}, {"minor", "Minor"}, {"warning", "Warning"}, {"info", "Info"}}},
		{Variable: true, Code: "first_seen", Datatype: DatatypeDatetime, Order: 8, Description: "When the anomaly was first seen"},
		{Variable: true, Code: "deadline", Datatype: DatatypeDatetime, Order: 9, Description: "Handling deadline"},
		{Variable: true, Code: "evidence", Datatype: DatatypeText, Order: 10, Description: "Readings and thresholds that fired the rule"},
	}
}

// DefaultServices is the built-in services list, aligned with the service
// codes the shipped rules (configs/rules) and city code tables use.
func DefaultServices() []Service {
	type s struct{ code, name, group, agency, typ string }
	list := []s{
		{"streetlight_fault", "路灯故障 Streetlight fault", "streetlight", "路灯管理所", TypeRealtime},
		{"streetlight_circuit_fault", "路灯回路故障 Streetlight circuit fault", "streetlight", "路灯管理所", TypeRealtime},
		{"streetlight_damage", "路灯损坏 Streetlight damaged", "streetlight", "路灯管理所", TypeRealtime},
		{"streetlight_leakage", "路灯漏电 Streetlight leakage current", "streetlight", "路灯管理所", TypeRealtime},
		{"cabinet_fault", "路灯箱变故障 Lighting cabinet fault", "streetlight", "路灯管理所", TypeRealtime},
		{"gas_pressure_abnormal", "燃气压力异常 Gas pressure abnormal", "gas", "燃气公司", TypeRealtime},
		{"gas_leak", "燃气泄漏 Gas leak", "gas", "燃气公司", TypeRealtime},
		{"gas_supply_interrupted", "燃气供应中断 Gas supply interrupted", "gas", "燃气公司", TypeRealtime},
		{"gas_station_intrusion", "燃气调压站闯入 Gas station intrusion", "gas", "燃气公司", TypeRealtime},
		{"facility_intrusion", "设施非法开启 Facility intrusion", "facilities", "城管执法", TypeRealtime},
		{"bin_overflow", "垃圾满溢 Bin overflowing", "environment", "环卫所", TypeRealtime},
		{"bin_fire", "垃圾箱起火 Bin fire", "environment", "环卫所", TypeRealtime},
		{"bin_damage", "垃圾箱损坏 Bin damaged", "environment", "环卫所", TypeRealtime},
		{"bin_damaged", "垃圾箱损坏 Bin damaged", "environment", "环卫所", TypeRealtime},
		{"sensor_maintenance", "传感器维护 Sensor maintenance", "facilities", "设备维护", TypeRealtime},
		{"device_offline", "设备离线 Device offline", "facilities", "设备维护", TypeRealtime},
	}
	out := make([]Service, 0, len(list))
	for _, e := range list {
		out = append(out, Service{
			Code: e.code, Name: e.name, Group: e.group, Type: e.typ, Agency: e.agency,
			Description: e.name + " (auto-detected by citygw)",
			Keywords:    []string{e.group, "citygw"},
			Attributes:  commonAttributes(),
		})
	}
	return out
}

// LoadServices reads a YAML services list (a sequence of services with the
// Open311 key names) strictly and checks it.
func LoadServices(path string) ([]Service, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("reading services: %w", err)
	}
	return ParseServices(path, data)
}

// ParseServices decodes and checks a YAML services list; file names errors.
func ParseServices(file string, data []byte) ([]Service, error) {
	var list []Service
	doc, err := yamlconf.Decode(file, data, &list)
	if err != nil {
		return nil, err
	}
	var errs yamlconf.Errors
	for i, s := range list {
		if err := checkService(s); err != nil {
			errs = append(errs, doc.Errorf(fmt.Sprintf("$[%d]", i), "service_code", "%v", err))
		}
	}
	if err := errs.Err(); err != nil {
		return nil, err
	}
	return list, checkServices(list)
}

func checkServices(list []Service) error {
	if len(list) == 0 {
		return fmt.Errorf("no services")
	}
	seen := map[string]bool{}
	for _, s := range list {
		if err := checkService(s); err != nil {
			return err
		}
		if seen[s.Code] {
			return fmt.Errorf("service %q listed twice", s.Code)
		}
		seen[s.Code] = true
	}
	return nil
}

func checkService(s Service) error {
	if s.Code == "" {
		return fmt.Errorf("service without service_code")
	}
	if !slices.Contains([]string{TypeRealtime, TypeBatch, TypeBlackbox}, s.Type) {
		return fmt.Errorf("service %q: type %q is not realtime, batch or blackbox", s.Code, s.Type)
	}
	codes := map[string]bool{}
	for _, a := range s.Attributes {
		if a.Code == "" {
			return fmt.Errorf("service %q: attribute without code", s.Code)
		}
		if codes[a.Code] {
			return fmt.Errorf("service %q: attribute %q defined twice", s.Code, a.Code)
		}
		codes[a.Code] = true
		switch a.Datatype {
		case DatatypeString, DatatypeNumber, DatatypeDatetime, DatatypeText:
		case DatatypeSingleValueList, DatatypeMultiValueList:
			if len(a.Values) == 0 {
				return fmt.Errorf("service %q: list attribute %q has no values", s.Code, a.Code)
			}
		default:
			return fmt.Errorf("service %q: attribute %q: unknown datatype %q", s.Code, a.Code, a.Datatype)
		}
	}
	return nil
}

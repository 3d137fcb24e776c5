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
	AttrAnomalyKey    = "anomaly_key"
	AttrComponentCode = "component_code"
	AttrSeverity      = "severity"
)

// commonAttributes are the attributes every built-in service defines: the
// ones citygw's case client sends (caseclient/open311.go).
func commonAttributes() []Attribute {
	str := func(order int, code, desc string) Attribute {
		return Attribute{Variable: true, Code: code, Datatype: DatatypeString, Order: order, Description: desc}
	}
	attrs := []Attribute{
		{Variable: true, Code: AttrCaseKey, Datatype: DatatypeString, Required: true, Order: 1,
			Description: "Case key: stable identity of the anomaly episode (and re-open generation)"},
		str(2, "episode_id", "Anomaly episode id"),
		{Variable: true, Code: "case_type", Datatype: DatatypeSingleValueList, Order: 3, Description: "Case type",
			Values: []AttributeValue{{"component", "部件 component"}, {"event", "事件 event"}}},
		str(4, "major_class", "Major class code (2 digits)"),
		str(5, "sub_class", "Subclass code (2 digits)"),
		{Variable: true, Code: AttrComponentCode, Datatype: DatatypeString, Order: 6,
			DatatypeDescription: "16 digits: district(6) class(2) subclass(2) serial(6)", Description: "Component (部件) code"},
		str(7, "grid", "Unit-grid cell code"),
		str(8, "district", "District code (GB/T 2260)"),
		{Variable: true, Code: AttrSeverity, Datatype: DatatypeSingleValueList, Order: 9, Description: "Severity",
			Values: []AttributeValue{{"critical", "Critical"}, {"major", "Major"}, {"minor", "Minor"}, {"warning", "Warning"}, {"info", "Info"}}},
		str(10, "rule", "Rule that found the anomaly"),
		{Variable: true, Code: "first_seen", Datatype: DatatypeDatetime, Order: 11, Description: "When the anomaly was first seen"},
		str(12, "deadline", "Handling deadline, such as \"2 working days\""),
		str(13, "department", "Responsible department"),
		str(14, "reopens", "Case key of the case this one re-opens"),
		str(15, "telemetry_url", "Link to the asset's telemetry"),
		str(16, AttrAnomalyKey, "Anomaly key: the same for every report of one anomaly (gateway replicas); at most one open request per key"),
	}
	return attrs
}

// DefaultServices is the built-in services list: the Open311 service codes
// of the demo city's code table (configs/citycodes.yaml, service_codes
// default), each with the attributes citygw's case client sends.
func DefaultServices() []Service {
	type s struct{ code, name, group, agency, desc string }
	list := []s{
		{"SL-FAULT", "路灯故障 streetlight fault", "streetlight", "区市政照明管理所", "Lamp dark at night, lit by day or drawing abnormal current"},
		{"SL-CIRCUIT", "路灯回路断电 streetlight circuit outage", "streetlight", "区市政照明管理所", "Most lamps of a circuit dark, or the cabinet without power"},
		{"SL-POWERCUT", "区域路灯大面积停电 district streetlight power cut", "streetlight", "区市政照明管理所（会同供电公司）", "More than half the lamps of a district dark at night (grid outage)"},
		{"SL-LEAK", "路灯配电箱漏电 streetlight cabinet earth leakage", "streetlight", "区市政照明管理所", "Cabinet earth-leakage current above 30 mA"},
		{"SL-POLE", "灯杆倾斜破损 streetlight pole tilted or damaged", "streetlight", "区市政照明管理所", "Pole tilted more than 10° or tilt alarm"},
		{"FAC-DOOR", "设施箱门异常打开 facility door opened", "facilities", "设施权属单位", "Cabinet or station door opened outside maintenance"},
		{"DEV-OFFLINE", "监测设备离线 monitoring device offline", "facilities", "城市运行管理中心物联网运维组", "Monitoring terminal silent for too long"},
		{"GAS-PRESSURE", "调压站压力异常 gas station pressure abnormal", "gas", "燃气公司调度中心", "Outlet pressure out of band or falling fast"},
		{"GAS-LEAK", "燃气泄漏 gas leak", "gas", "燃气公司抢修中心", "Methane at the station reached the 20 % LEL alarm"},
		{"GAS-VALVE", "调压站切断阀异常关闭 gas station shut-off valve closed", "gas", "燃气公司调度中心", "Shut-off valve closed without pressure or leak alarm"},
		{"BIN-FULL", "垃圾满溢 overflowing bin", "environment", "区绿化市容局环卫所", "Bin fill level at 90 % and staying"},
		{"BIN-FIRE", "垃圾箱起火 bin fire", "environment", "区绿化市容局环卫所", "Bin temperature above 70 °C or rising fast"},
		{"BIN-DAMAGE", "垃圾箱倾倒破损 bin knocked over or damaged", "environment", "区绿化市容局环卫所", "Bin tilted more than 45° and staying"},
		{"SENSOR-MAINT", "监测设备需维护 sensor maintenance", "facilities", "城市运行管理中心物联网运维组", "Sensor battery below 15 %"},
	}
	out := make([]Service, 0, len(list))
	for _, e := range list {
		out = append(out, Service{
			Code: e.code, Name: e.name, Group: e.group, Type: TypeRealtime, Agency: e.agency,
			Description: e.desc, Keywords: []string{e.group, "citygw"}, Attributes: commonAttributes(),
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

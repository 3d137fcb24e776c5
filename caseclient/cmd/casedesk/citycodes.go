package main

import (
	"fmt"
	"slices"
	"strings"

	"github.com/citygw/citygw/caseclient"
	"github.com/citygw/citygw/caseclient/casedesk"
)

// servicesFromCodeTable builds the Open311 services list from a city code
// table (caseclient.LoadCodeTable): one realtime service per distinct
// service_code of the table (every sink's, or only those sink uses when sink
// is not empty), named after the table's row, with the built-in attributes.
func servicesFromCodeTable(path, sink string) ([]casedesk.Service, error) {
	table, err := caseclient.LoadCodeTable(path)
	if err != nil {
		return nil, err
	}
	attrs := casedesk.DefaultServices()[0].Attributes
	var out []casedesk.Service
	seen := map[string]bool{}
	names := make([]string, 0, len(table.Services))
	for name := range table.Services {
		names = append(names, name)
	}
	slices.Sort(names)
	for _, name := range names {
		s := table.Services[name]
		var codes []string
		if sink != "" {
			codes = []string{s.ServiceCode(sink)}
		} else {
			for _, c := range s.Codes {
				codes = append(codes, c)
			}
			slices.Sort(codes)
		}
		for _, code := range codes {
			if code == "" || seen[code] {
				continue
			}
			seen[code] = true
			out = append(out, casedesk.Service{
				Code:        code,
				Name:        strings.TrimSpace(s.Title.ZH + " " + s.Title.EN),
				Description: s.Condition,
				Group:       s.Type,
				Type:        casedesk.TypeRealtime,
				Keywords:    []string{name, s.Type},
				Agency:      s.Department,
				Attributes:  slices.Clone(attrs),
			})
		}
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("%s: no service codes", path)
	}
	return out, nil
}

package city

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"

	"github.com/goccy/go-yaml"

	"github.com/citygw/citygw/devices"
)

type inventoryFile struct {
	Assets []*devices.Asset `yaml:"assets"`
}

// InventoryYAML renders the city's asset inventory in the format
// devices.ParseInventoryYAML reads.
func (c *City) InventoryYAML() ([]byte, error) {
	body, err := yaml.MarshalWithOptions(inventoryFile{Assets: c.Inventory.Assets}, yaml.IndentSequence(true))
	if err != nil {
		return nil, fmt.Errorf("encoding inventory: %w", err)
	}
	var b bytes.Buffer
	fmt.Fprintf(&b, "# Asset inventory of simulated city %q (seed %d), written by firmware-sim.\n", c.Config.Name, c.Config.Seed)
	fmt.Fprintf(&b, "# %d cabinets, %d lamps, %d gas stations, %d bins; Modbus on %d ports from %s.\n",
		len(c.Cabinets), len(c.Lamps), len(c.Gas), len(c.Bins), len(c.Ports), firstPort(c.Ports))
	b.Write(body)
	return b.Bytes(), nil
}

func firstPort(p []string) string {
	if len(p) == 0 {
		return "-"
	}
	return p[0]
}

// WriteInventory writes the inventory to file atomically (a temporary file
// renamed into place), so a gateway never reads half of it.
func (c *City) WriteInventory(file string) error {
	data, err := c.InventoryYAML()
	if err != nil {
		return err
	}
	tmp, err := os.CreateTemp(filepath.Dir(file), ".inventory-*.yaml")
	if err != nil {
		return fmt.Errorf("writing inventory: %w", err)
	}
	if _, err := tmp.Write(data); err != nil {
		tmp.Close()
		os.Remove(tmp.Name())
		return fmt.Errorf("writing inventory: %w", err)
	}
	if err := tmp.Close(); err != nil {
		os.Remove(tmp.Name())
		return fmt.Errorf("writing inventory: %w", err)
	}
	if err := os.Rename(tmp.Name(), file); err != nil {
		os.Remove(tmp.Name())
		return fmt.Errorf("writing inventory: %w", err)
	}
	return nil
}

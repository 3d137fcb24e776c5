package devices

import (
	"embed"
	"io/fs"
)

//go:embed profiles/*.yaml
var builtinFS embed.FS

// BuiltinProfiles returns the profiles shipped with citygw (devices/profiles).
func BuiltinProfiles() fs.FS {
	sub, err := fs.Sub(builtinFS, "profiles")
	if err != nil {
		panic(err) // the embedded directory is fixed at build time
	}
	return sub
}

// LoadBuiltinCatalog loads the shipped profiles.
func LoadBuiltinCatalog() (*Catalog, error) { return LoadCatalog(BuiltinProfiles(), ".") }

// Package devices describes what the city's instrumented assets are and how
// to read them: device profiles (Modbus register maps and MQTT JSON payload
// schemas, one YAML file per device model), the kind schemas the profiles of
// one kind share, the asset inventory, and the decoders that turn raw
// registers or payloads into typed Readings.
//
// The package has no I/O beyond loading its YAML/CSV files; transports live in
// gateway/ and firmware-sim/.
package devices

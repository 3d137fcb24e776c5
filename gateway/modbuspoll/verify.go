package modbuspoll

import (
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"os"

	"github.com/goburrow/modbus"
	"github.com/goburrow/serial"
)

// Why a request failed (label reason of citygw_modbus_request_errors_total).
const (
	reasonTimeout       = "timeout"        // no (complete) reply within the timeout
	reasonConnection    = "connection"     // the connection was refused, closed or reset
	reasonTransactionID = "transaction_id" // MBAP transaction id is not the request's
	reasonProtocolID    = "protocol_id"    // MBAP protocol id is not 0
	reasonUnitID        = "unit_id"        // unit (slave) id is not the request's
	reasonFunctionCode  = "function_code"  // neither the request's function nor its exception
	reasonByteCount     = "byte_count"     // the byte count field disagrees with the data that came
	reasonLength        = "length"         // a well-formed reply with more or less data than asked for
	reasonCRC           = "crc"            // RTU checksum mismatch
	reasonMalformed     = "malformed"      // any other broken frame
	// Exception replies: "exception_" and the exception's name.
	reasonExceptionPrefix = "exception_"
)

// exceptionReason names an exception code of the Modbus application
// protocol (section 7); others are exception_other.
func exceptionReason(code byte) string {
	switch code {
	case modbus.ExceptionCodeIllegalFunction:
		return "exception_illegal_function"
	case modbus.ExceptionCodeIllegalDataAddress:
		return "exception_illegal_data_address"
	case modbus.ExceptionCodeIllegalDataValue:
		return "exception_illegal_data_value"
	case modbus.ExceptionCodeServerDeviceFailure:
		return "exception_device_failure"
	case modbus.ExceptionCodeAcknowledge:
		return "exception_acknowledge"
	case modbus.ExceptionCodeServerDeviceBusy:
		return "exception_busy"
	case modbus.ExceptionCodeMemoryParityError:
		return "exception_memory_parity"
	case modbus.ExceptionCodeGatewayPathUnavailable:
		return "exception_gateway_path"
	case modbus.ExceptionCodeGatewayTargetDeviceFailedToRespond:
		return "exception_gateway_target"
	}
	return reasonExceptionPrefix + "other"
}

// badResponse is a reply the poller refused: it is not the answer to the
// request that was sent. goburrow's own checks return untyped errors (and
// take any function code other than the request's for an exception), so
// the links verify replies themselves before goburrow decodes them.
type badResponse struct {
	reason string
	msg    string
}

func (e *badResponse) Error() string { return e.msg }

func bad(reason, format string, args ...any) error {
	return &badResponse{reason: reason, msg: fmt.Sprintf(format, args...)}
}

// reasonOf maps a request error to its reason label.
func reasonOf(err error) string {
	var br *badResponse
	var me *modbus.ModbusError
	var ne net.Error
	switch {
	case errors.As(err, &br):
		return br.reason
	case errors.As(err, &me):
		return exceptionReason(me.ExceptionCode)
	case errors.Is(err, serial.ErrTimeout), errors.Is(err, os.ErrDeadlineExceeded),
		errors.As(err, &ne) && ne.Timeout():
		return reasonTimeout
	case connectionLost(err):
		return reasonConnection
	}
	// goburrow's transport rejects an MBAP length of 0 or over 254 with an
	// untyped error.
	return reasonMalformed
}

// responseBytes is the data length a read request's reply must carry, or -1
// for functions the poller does not issue.
func responseBytes(fc byte, quantity uint16) int {
	switch fc {
	case modbus.FuncCodeReadCoils, modbus.FuncCodeReadDiscreteInputs:
		return (int(quantity) + 7) / 8
	case modbus.FuncCodeReadHoldingRegisters, modbus.FuncCodeReadInputRegisters:
		return 2 * int(quantity)
	}
	return -1
}

// verifyPDU checks a reply's PDU (function code and data) against the
// request's (function code, start, quantity).
func verifyPDU(reqPDU, respPDU []byte) error {
	if len(respPDU) == 0 {
		return bad(reasonMalformed, "reply has no function code")
	}
	fc, got := reqPDU[0], respPDU[0]
	switch got {
	case fc | 0x80:
		if len(respPDU) != 2 {
			return bad(reasonMalformed, "exception reply carries %d bytes after its function code, want 1", len(respPDU)-1)
		}
		return nil
	case fc:
	default:
		return bad(reasonFunctionCode, "reply function code %d, request %d", got, fc)
	}
	if len(reqPDU) < 5 {
		return nil
	}
	want := responseBytes(fc, binary.BigEndian.Uint16(reqPDU[3:]))
	if want < 0 {
		return nil
	}
	if len(respPDU) < 2 {
		return bad(reasonMalformed, "reply has no byte count")
	}
	if count, data := int(respPDU[1]), len(respPDU)-2; count != data {
		return bad(reasonByteCount, "reply byte count %d, but %d data bytes came", count, data)
	}
	if data := len(respPDU) - 2; data != want {
		return bad(reasonLength, "reply carries %d data bytes, the request needs %d", data, want)
	}
	return nil
}

// Verify checks a Modbus TCP reply against its request: transaction,
// protocol and unit id, function code, byte count and length.
func (l tcpLink) Verify(req, resp []byte) error {
	const header = 7
	if len(resp) < header {
		return bad(reasonMalformed, "reply of %d bytes is shorter than the MBAP header", len(resp))
	}
	if got, want := binary.BigEndian.Uint16(resp), binary.BigEndian.Uint16(req); got != want {
		return bad(reasonTransactionID, "reply transaction id %d, request %d", got, want)
	}
	if got := binary.BigEndian.Uint16(resp[2:]); got != 0 {
		return bad(reasonProtocolID, "reply protocol id %d, want 0", got)
	}
	if resp[6] != req[6] {
		return bad(reasonUnitID, "reply unit id %d, request %d", resp[6], req[6])
	}
	return verifyPDU(req[header:], resp[header:])
}

// Verify checks a Modbus RTU reply against its request: checksum, unit
// id, function code, byte count and length.
func (l rtuLink) Verify(req, resp []byte) error {
	if len(resp) < 4 {
		return bad(reasonMalformed, "reply of %d bytes is shorter than an RTU frame", len(resp))
	}
	n := len(resp)
	if got, want := uint16(resp[n-2])|uint16(resp[n-1])<<8, crc16(resp[:n-2]); got != want {
		return bad(reasonCRC, "reply checksum %04x, computed %04x", got, want)
	}
	if resp[0] != req[0] {
		return bad(reasonUnitID, "reply unit id %d, request %d", resp[0], req[0])
	}
	return verifyPDU(req[1:len(req)-2], resp[1:n-2])
}

// crc16 is the Modbus RTU checksum (CRC-16/MODBUS).
func crc16(b []byte) uint16 {
	crc := uint16(0xffff)
	for _, c := range b {
		crc ^= uint16(c)
		for range 8 {
			if crc&1 != 0 {
				crc = crc>>1 ^ 0xa001
			} else {
				crc >>= 1
			}
		}
	}
	return crc
}

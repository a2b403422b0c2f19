package engine

// The attribute values of the release builder: KeyValues, AnyValues, arrays and key-value
// lists, each within the recursion limit ProtoUnmarshaler has.

import (
	"math"

	"go.opentelemetry.io/collector/pdata/pcommon"
)

// keyValue appends one KeyValue to m. A key m already holds falls back (the public API
// would replace its value; ProtoUnmarshaler keeps both).
func (b *releaseBuilder) keyValue(m pcommon.Map, buf []byte, depth int) error {
	if depth >= recursionLimit {
		return errFallback
	}
	key, value, ok := shortKeyValue(buf)
	if !ok {
		start, err := b.scan(buf, &wantKeyValue, refuseKeyStrindex, nil)
		if err != nil {
			return err
		}
		values := 0
		for i := start; i < len(b.fields); i++ {
			f := &b.fields[i]
			switch f.num {
			case 1:
				key = f.bytes(buf)
			case 2:
				value = f.bytes(buf)
				values++
			}
		}
		b.fields = b.fields[:start]
		if values > 1 {
			return errFallback
		}
	}
	before := m.Len()
	if err := b.putValue(m, b.intern(key), value, depth+1); err != nil {
		return err
	}
	if m.Len() == before {
		return errFallback
	}
	return nil
}

// refuseKeyStrindex: KeyValue field 3 (key_strindex), not in the public API.
const refuseKeyStrindex = 3

// shortKeyValue reads the usual encoding of a KeyValue, its key then its value with one-byte
// tags and lengths and nothing else; ok is false for any other encoding, left to scan.
func shortKeyValue(buf []byte) (key, value []byte, ok bool) {
	if len(buf) < 4 || buf[0] != 1<<3|wireLen || buf[1] >= 0x80 {
		return nil, nil, false
	}
	k := 2 + int(buf[1])
	if k+2 > len(buf) || buf[k] != 2<<3|wireLen || buf[k+1] >= 0x80 || k+2+int(buf[k+1]) != len(buf) {
		return nil, nil, false
	}
	return buf[2:k], buf[k+2:], true
}

// refuseStringStrindex: AnyValue field 8 (string_value_strindex), not in the public API.
const refuseStringStrindex = 8

// anyValue returns the one oneof field of an AnyValue (num 0 for none), its offset within
// buf.
func (b *releaseBuilder) anyValue(buf []byte, depth int) (field, error) {
	if depth >= recursionLimit {
		return field{}, errFallback
	}
	if f, ok := shortAnyValue(buf); ok {
		return f, nil
	}
	start, err := b.scan(buf, &wantAnyValue, refuseStringStrindex, nil)
	if err != nil {
		return field{}, err
	}
	var one field
	switch len(b.fields) - start {
	case 0:
	case 1:
		one = b.fields[start]
	default:
		return field{}, errFallback
	}
	b.fields = b.fields[:start]
	return one, nil
}

// shortAnyValue reads the usual encodings of an AnyValue, one string with a one-byte length
// or one bool or int, and nothing else; ok is false for any other encoding, left to scan.
func shortAnyValue(buf []byte) (field, bool) {
	if len(buf) < 2 {
		return field{}, false
	}
	switch buf[0] {
	case 1<<3 | wireLen:
		if buf[1] < 0x80 && 2+int(buf[1]) == len(buf) {
			return field{v: uint64(buf[1]), off: 2, num: 1, wire: wireLen}, true
		}
	case 2<<3 | wireVarint, 3<<3 | wireVarint:
		if v, pos, err := varint(buf, 1); err == nil && pos == len(buf) {
			return field{v: v, num: int32(buf[0] >> 3), wire: wireVarint}, true
		}
	}
	return field{}, false
}

// putValue puts key with the AnyValue in buf into m.
func (b *releaseBuilder) putValue(m pcommon.Map, key string, buf []byte, depth int) error {
	f, err := b.anyValue(buf, depth)
	if err != nil {
		return err
	}
	switch f.num {
	case 0:
		m.PutEmpty(key)
	case 1:
		m.PutStr(key, b.arena.str(f.bytes(buf)))
	case 2:
		m.PutBool(key, f.v != 0)
	case 3:
		m.PutInt(key, int64(f.v))
	case 4:
		m.PutDouble(key, math.Float64frombits(f.v))
	case 5:
		return b.values(m.PutEmptySlice(key), f.bytes(buf), depth+1)
	case 6:
		return b.kvlist(m.PutEmptyMap(key), f.bytes(buf), depth+1)
	case 7:
		bs := m.PutEmptyBytes(key)
		if f.v > 0 {
			bs.FromRaw(f.bytes(buf))
		}
	}
	return nil
}

// setValue sets v to the AnyValue in buf (v is empty).
func (b *releaseBuilder) setValue(v pcommon.Value, buf []byte, depth int) error {
	f, err := b.anyValue(buf, depth)
	if err != nil {
		return err
	}
	switch f.num {
	case 1:
		v.SetStr(b.arena.str(f.bytes(buf)))
	case 2:
		v.SetBool(f.v != 0)
	case 3:
		v.SetInt(int64(f.v))
	case 4:
		v.SetDouble(math.Float64frombits(f.v))
	case 5:
		return b.values(v.SetEmptySlice(), f.bytes(buf), depth+1)
	case 6:
		return b.kvlist(v.SetEmptyMap(), f.bytes(buf), depth+1)
	case 7:
		bs := v.SetEmptyBytes()
		if f.v > 0 {
			bs.FromRaw(f.bytes(buf))
		}
	}
	return nil
}

// values fills s from an ArrayValue.
func (b *releaseBuilder) values(s pcommon.Slice, buf []byte, depth int) error {
	if depth >= recursionLimit {
		return errFallback
	}
	start, err := b.scan(buf, &wantValues, 0, nil)
	if err != nil {
		return err
	}
	end := len(b.fields)
	if end > start {
		s.EnsureCapacity(end - start)
	}
	for i := start; i < end; i++ {
		f := b.fields[i]
		if err := b.setValue(s.AppendEmpty(), f.bytes(buf), depth+1); err != nil {
			return err
		}
	}
	b.fields = b.fields[:start]
	return nil
}

// kvlist fills m from a KeyValueList.
func (b *releaseBuilder) kvlist(m pcommon.Map, buf []byte, depth int) error {
	if depth >= recursionLimit {
		return errFallback
	}
	start, err := b.scan(buf, &wantValues, 0, nil)
	if err != nil {
		return err
	}
	end := len(b.fields)
	if end > start {
		m.EnsureCapacity(end - start)
	}
	for i := start; i < end; i++ {
		f := b.fields[i]
		if err := b.keyValue(m, f.bytes(buf), depth+1); err != nil {
			return err
		}
	}
	b.fields = b.fields[:start]
	return nil
}

// releaseBytesSeen, when set (by tests only), sees every release's bytes before they are
// decoded.
var releaseBytesSeen func([]byte)

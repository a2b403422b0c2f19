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
	var key, value []byte
	values := 0
	for pos := 0; pos < len(buf); {
		f, p, err := next(buf, pos)
		if err != nil {
			return err
		}
		pos = p
		if f.num <= 16 {
			if w := wantKeyValue[f.num]; w != 0 && w-1 != f.wire {
				return errFallback
			}
		}
		switch f.num {
		case 1:
			key = f.data
		case 2:
			value = f.data
			values++
		case 3: // key_strindex: not in the public API
			return errFallback
		}
	}
	if values > 1 {
		return errFallback
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

// anyValue returns the one oneof field of an AnyValue (num 0 for none).
func anyValue(buf []byte, depth int) (field, error) {
	if depth >= recursionLimit {
		return field{}, errFallback
	}
	var one field
	set := 0
	for pos := 0; pos < len(buf); {
		f, p, err := next(buf, pos)
		if err != nil {
			return field{}, err
		}
		pos = p
		if f.num > 8 {
			continue // unknown: skipped
		}
		if wantAnyValue[f.num]-1 != f.wire || f.num == 8 { // 8: string_value_strindex
			return field{}, errFallback
		}
		one = f
		set++
	}
	if set > 1 {
		return field{}, errFallback
	}
	return one, nil
}

// putValue puts key with the AnyValue in buf into m.
func (b *releaseBuilder) putValue(m pcommon.Map, key string, buf []byte, depth int) error {
	f, err := anyValue(buf, depth)
	if err != nil {
		return err
	}
	switch f.num {
	case 0:
		m.PutEmpty(key)
	case 1:
		m.PutStr(key, b.arena.str(f.data))
	case 2:
		m.PutBool(key, f.v != 0)
	case 3:
		m.PutInt(key, int64(f.v))
	case 4:
		m.PutDouble(key, math.Float64frombits(f.v))
	case 5:
		return b.values(m.PutEmptySlice(key), f.data, depth+1)
	case 6:
		return b.kvlist(m.PutEmptyMap(key), f.data, depth+1)
	case 7:
		bs := m.PutEmptyBytes(key)
		if len(f.data) > 0 {
			bs.FromRaw(f.data)
		}
	}
	return nil
}

// setValue sets v to the AnyValue in buf (v is empty).
func (b *releaseBuilder) setValue(v pcommon.Value, buf []byte, depth int) error {
	f, err := anyValue(buf, depth)
	if err != nil {
		return err
	}
	switch f.num {
	case 1:
		v.SetStr(b.arena.str(f.data))
	case 2:
		v.SetBool(f.v != 0)
	case 3:
		v.SetInt(int64(f.v))
	case 4:
		v.SetDouble(math.Float64frombits(f.v))
	case 5:
		return b.values(v.SetEmptySlice(), f.data, depth+1)
	case 6:
		return b.kvlist(v.SetEmptyMap(), f.data, depth+1)
	case 7:
		bs := v.SetEmptyBytes()
		if len(f.data) > 0 {
			bs.FromRaw(f.data)
		}
	}
	return nil
}

// values fills s from an ArrayValue.
func (b *releaseBuilder) values(s pcommon.Slice, buf []byte, depth int) error {
	if depth >= recursionLimit {
		return errFallback
	}
	c, err := counts(buf, &wantValues, nil)
	if err != nil {
		return err
	}
	if c[1] > 0 {
		s.EnsureCapacity(c[1])
	}
	for pos := 0; pos < len(buf); {
		f, p, _ := next(buf, pos)
		pos = p
		if f.num == 1 {
			if err := b.setValue(s.AppendEmpty(), f.data, depth+1); err != nil {
				return err
			}
		}
	}
	return nil
}

// kvlist fills m from a KeyValueList.
func (b *releaseBuilder) kvlist(m pcommon.Map, buf []byte, depth int) error {
	if depth >= recursionLimit {
		return errFallback
	}
	c, err := counts(buf, &wantValues, nil)
	if err != nil {
		return err
	}
	if c[1] > 0 {
		m.EnsureCapacity(c[1])
	}
	for pos := 0; pos < len(buf); {
		f, p, _ := next(buf, pos)
		pos = p
		if f.num == 1 {
			if err := b.keyValue(m, f.data, depth+1); err != nil {
				return err
			}
		}
	}
	return nil
}

// releaseBytesSeen, when set (by tests only), sees every release's bytes before they are
// decoded.
var releaseBytesSeen func([]byte)

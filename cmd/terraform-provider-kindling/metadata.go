package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math/big"
	"reflect"
	"sort"

	"github.com/hashicorp/terraform-plugin-framework/types"
	"github.com/hashicorp/terraform-plugin-go/tftypes"
)

// A group's metadata is a Dynamic attribute: HCL objects, maps, lists,
// tuples, sets, numbers, strings and bools all become the group's JSON
// metadata object, and a JSON object read back from the server becomes HCL
// objects and tuples again.

// errUnknown marks a value not known until apply: fine in validation,
// never at apply time.
var errUnknown = errors.New("not known yet")

// metadataJSON turns a metadata value from a plan or state into the JSON
// object the server stores; null means no metadata.
func metadataJSON(ctx context.Context, v types.Dynamic) (map[string]any, error) {
	if v.IsNull() || v.IsUnderlyingValueNull() {
		return nil, nil
	}
	if v.IsUnknown() || v.IsUnderlyingValueUnknown() {
		return nil, fmt.Errorf("metadata is %w", errUnknown)
	}
	tv, err := v.ToTerraformValue(ctx)
	if err != nil {
		return nil, fmt.Errorf("converting metadata: %w", err)
	}
	x, err := jsonOf(tv, "metadata")
	if err != nil {
		return nil, err
	}
	m, ok := x.(map[string]any)
	if !ok {
		return nil, fmt.Errorf("metadata: a %s is not an object; write metadata = { key = value, … }", typeName(tv.Type()))
	}
	return m, nil
}

// jsonOf converts a Terraform value to the Go value encoding/json writes:
// numbers become json.Number with their exact decimal text.
func jsonOf(v tftypes.Value, at string) (any, error) {
	if !v.IsKnown() {
		return nil, fmt.Errorf("%s is %w", at, errUnknown)
	}
	if v.IsNull() {
		return nil, nil
	}
	t := v.Type()
	switch {
	case t.Is(tftypes.String):
		var s string
		err := v.As(&s)
		return s, err
	case t.Is(tftypes.Bool):
		var b bool
		err := v.As(&b)
		return b, err
	case t.Is(tftypes.Number):
		f := new(big.Float)
		if err := v.As(&f); err != nil {
			return nil, err
		}
		return numberJSON(f, at)
	case t.Is(tftypes.Object{}), t.Is(tftypes.Map{}):
		var m map[string]tftypes.Value
		if err := v.As(&m); err != nil {
			return nil, err
		}
		out := make(map[string]any, len(m))
		for k, e := range m {
			x, err := jsonOf(e, at+"."+k)
			if err != nil {
				return nil, err
			}
			out[k] = x
		}
		return out, nil
	case t.Is(tftypes.List{}), t.Is(tftypes.Set{}), t.Is(tftypes.Tuple{}):
		var l []tftypes.Value
		if err := v.As(&l); err != nil {
			return nil, err
		}
		out := make([]any, len(l))
		for i, e := range l {
			x, err := jsonOf(e, fmt.Sprintf("%s[%d]", at, i))
			if err != nil {
				return nil, err
			}
			out[i] = x
		}
		return out, nil
	}
	return nil, fmt.Errorf("%s: a %s cannot be stored as JSON", at, typeName(t))
}

func numberJSON(f *big.Float, at string) (json.Number, error) {
	if f.IsInf() {
		return "", fmt.Errorf("%s: infinity cannot be stored as JSON", at)
	}
	if f.IsInt() {
		i, _ := f.Int(nil)
		return json.Number(i.String()), nil
	}
	return json.Number(f.Text('g', -1)), nil
}

func typeName(t tftypes.Type) string {
	switch {
	case t.Is(tftypes.String):
		return "string"
	case t.Is(tftypes.Number):
		return "number"
	case t.Is(tftypes.Bool):
		return "bool"
	case t.Is(tftypes.Object{}):
		return "object"
	case t.Is(tftypes.Map{}):
		return "map"
	case t.Is(tftypes.List{}):
		return "list"
	case t.Is(tftypes.Set{}):
		return "set"
	case t.Is(tftypes.Tuple{}):
		return "tuple"
	}
	return t.String()
}

// metadataValue turns the server's metadata object into a Dynamic value:
// objects stay objects, arrays become tuples, so the value equals what the
// same literal in HCL gives. Nil or empty metadata is null.
func metadataValue(ctx context.Context, m map[string]any) (types.Dynamic, error) {
	if len(m) == 0 {
		return types.DynamicNull(), nil
	}
	tv, err := terraformOf(m, "metadata")
	if err != nil {
		return types.DynamicNull(), err
	}
	v, err := types.DynamicType.ValueFromTerraform(ctx, tv)
	if err != nil {
		return types.DynamicNull(), fmt.Errorf("converting metadata: %w", err)
	}
	d, ok := v.(types.Dynamic)
	if !ok {
		return types.DynamicNull(), fmt.Errorf("converting metadata: got %T, want a dynamic value", v)
	}
	return d, nil
}

// terraformOf converts a value decoded from JSON (float64 or json.Number
// numbers) into a Terraform value. JSON null becomes a null string, which
// converts back to JSON null.
func terraformOf(x any, at string) (tftypes.Value, error) {
	switch x := x.(type) {
	case nil:
		return tftypes.NewValue(tftypes.String, nil), nil
	case string:
		return tftypes.NewValue(tftypes.String, x), nil
	case bool:
		return tftypes.NewValue(tftypes.Bool, x), nil
	case float64:
		return tftypes.NewValue(tftypes.Number, big.NewFloat(x)), nil
	case json.Number:
		f, _, err := big.ParseFloat(string(x), 10, 512, big.ToNearestEven)
		if err != nil {
			return tftypes.Value{}, fmt.Errorf("%s: number %q: %w", at, x, err)
		}
		return tftypes.NewValue(tftypes.Number, f), nil
	case map[string]any:
		keys := make([]string, 0, len(x))
		for k := range x {
			keys = append(keys, k)
		}
		sort.Strings(keys)
		ts := make(map[string]tftypes.Type, len(x))
		vs := make(map[string]tftypes.Value, len(x))
		for _, k := range keys {
			v, err := terraformOf(x[k], at+"."+k)
			if err != nil {
				return tftypes.Value{}, err
			}
			ts[k], vs[k] = v.Type(), v
		}
		return tftypes.NewValue(tftypes.Object{AttributeTypes: ts}, vs), nil
	case []any:
		ts := make([]tftypes.Type, len(x))
		vs := make([]tftypes.Value, len(x))
		for i, e := range x {
			v, err := terraformOf(e, fmt.Sprintf("%s[%d]", at, i))
			if err != nil {
				return tftypes.Value{}, err
			}
			ts[i], vs[i] = v.Type(), v
		}
		return tftypes.NewValue(tftypes.Tuple{ElementTypes: ts}, vs), nil
	}
	return tftypes.Value{}, fmt.Errorf("%s: unexpected JSON value of type %T", at, x)
}

// sameJSON reports whether a and b are the same JSON document once both
// are encoded and decoded the way the server stores metadata (numbers as
// float64), so 1 and 1.0, or a map and an object, compare equal. Nil and
// an empty object are the same (the server omits empty metadata).
func sameJSON(a, b map[string]any) bool {
	if len(a) == 0 && len(b) == 0 {
		return true
	}
	na, errA := canonicalJSON(a)
	nb, errB := canonicalJSON(b)
	if errA != nil || errB != nil {
		return false
	}
	return reflect.DeepEqual(na, nb)
}

func canonicalJSON(x any) (any, error) {
	b, err := json.Marshal(x)
	if err != nil {
		return nil, err
	}
	var out any
	d := json.NewDecoder(bytes.NewReader(b))
	if err := d.Decode(&out); err != nil {
		return nil, err
	}
	return out, nil
}

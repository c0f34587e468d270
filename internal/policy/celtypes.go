package policy

import (
	"fmt"
	"reflect"

	"cel.dev/cel-go/common/types"
	"cel.dev/cel-go/common/types/ref"
	"cel.dev/cel-go/interpreter"
)

// The CEL object types rules see. Their fields are read straight from the
// evaluation state through FieldType.GetFrom, so a field access costs a
// type assertion and, the first time in a decision, one conversion.
const (
	typeAgent   = "interlock.Agent"
	typeOwner   = "interlock.Owner"
	typeTool    = "interlock.Tool"
	typeCall    = "interlock.Call"
	typeContext = "interlock.Context"
	typeLookups = "interlock.Lookups"
	typeBudget  = "interlock.Budget"
)

// objKind indexes the per-decision views of the state, one per object
// variable.
type objKind uint8

const (
	kindAgent objKind = iota
	kindOwner
	kindTool
	kindCall
	kindContext
	kindLookups
	numKinds
)

// Cache slots for field values converted to CEL values.
const (
	slotAgentID = iota
	slotAgentName
	slotAgentDepartment
	slotAgentPurpose
	slotAgentState
	slotAgentOwner
	slotOwnerEmail
	slotOwnerName
	slotOwnerRoles
	slotOwnerActive
	slotToolUpstream
	slotToolName
	slotToolTitle
	slotToolDescription
	slotToolAnnotations
	slotCallClass
	slotCallAction
	slotCallRisk
	slotCallRiskScore
	slotCallAmount
	slotContextTime
	slotContextWeekday
	slotContextHour
	slotContextClientIP
	slotContextSession
	slotContextIntent
	numSlots
)

// fieldDef is one field of an object type.
type fieldDef struct {
	name  string
	typ   *types.Type
	slot  int
	get   func(s *evalState) (ref.Val, error)
	isSet func(s *evalState) bool
}

func strField(name string, slot int, get func(s *evalState) string) fieldDef {
	return fieldDef{name: name, typ: types.StringType, slot: slot, get: func(s *evalState) (ref.Val, error) {
		return types.String(get(s)), nil
	}}
}

// objectFields lists the fields of the fixed object types.
func objectFields() map[string][]fieldDef {
	return map[string][]fieldDef{
		typeAgent: {
			strField("id", slotAgentID, func(s *evalState) string { return s.in.Agent.ID }),
			strField("name", slotAgentName, func(s *evalState) string { return s.in.Agent.Name }),
			strField("department", slotAgentDepartment, func(s *evalState) string { return s.in.Agent.Department }),
			strField("purpose", slotAgentPurpose, func(s *evalState) string { return s.in.Agent.Purpose }),
			strField("state", slotAgentState, func(s *evalState) string { return s.in.Agent.State }),
			strField("owner", slotAgentOwner, func(s *evalState) string { return s.in.Agent.Owner }),
		},
		typeOwner: {
			strField("email", slotOwnerEmail, func(s *evalState) string { return s.in.Owner.Email }),
			strField("name", slotOwnerName, func(s *evalState) string { return s.in.Owner.Name }),
			{name: "roles", typ: types.NewListType(types.StringType), slot: slotOwnerRoles, get: func(s *evalState) (ref.Val, error) {
				return types.NewStringList(types.DefaultTypeAdapter, s.in.Owner.Roles), nil
			}},
			{name: "active", typ: types.BoolType, slot: slotOwnerActive, get: func(s *evalState) (ref.Val, error) {
				return types.Bool(s.in.Owner.Active), nil
			}},
		},
		typeTool: {
			strField("upstream", slotToolUpstream, func(s *evalState) string { return s.in.Tool.Upstream }),
			strField("name", slotToolName, func(s *evalState) string { return s.in.Tool.Name }),
			strField("title", slotToolTitle, func(s *evalState) string { return s.in.Tool.Title }),
			strField("description", slotToolDescription, func(s *evalState) string { return s.in.Tool.Description }),
			{name: "annotations", typ: types.NewMapType(types.StringType, types.DynType), slot: slotToolAnnotations, get: func(s *evalState) (ref.Val, error) {
				a := s.in.Tool.Annotations
				if a == nil {
					a = map[string]any{}
				}
				return types.NewStringInterfaceMap(types.DefaultTypeAdapter, a), nil
			}},
		},
		typeCall: {
			strField("class", slotCallClass, func(s *evalState) string { return s.call.Class }),
			strField("action", slotCallAction, func(s *evalState) string { return s.call.Action }),
			strField("risk", slotCallRisk, func(s *evalState) string { return s.call.Risk }),
			{name: "risk_score", typ: types.IntType, slot: slotCallRiskScore, get: func(s *evalState) (ref.Val, error) {
				return types.Int(s.call.RiskScore), nil
			}},
			{name: "amount", typ: types.DoubleType, slot: slotCallAmount,
				get: func(s *evalState) (ref.Val, error) {
					if !s.call.HasAmount {
						return nil, fmt.Errorf("call.amount: tool %s has no amount (test has(call.amount) first)", s.in.Tool.FullName())
					}
					return types.Double(s.call.Amount), nil
				},
				isSet: func(s *evalState) bool { return s.call.HasAmount }},
		},
		typeContext: {
			{name: "time", typ: types.TimestampType, slot: slotContextTime, get: func(s *evalState) (ref.Val, error) {
				return types.Timestamp{Time: s.in.Context.Time.UTC()}, nil
			}},
			strField("weekday", slotContextWeekday, func(s *evalState) string { return s.in.Context.Time.UTC().Weekday().String() }),
			{name: "hour", typ: types.IntType, slot: slotContextHour, get: func(s *evalState) (ref.Val, error) {
				return types.Int(s.in.Context.Time.UTC().Hour()), nil
			}},
			strField("client_ip", slotContextClientIP, func(s *evalState) string { return s.in.Context.ClientIP }),
			strField("session", slotContextSession, func(s *evalState) string { return s.in.Context.Session }),
			strField("intent", slotContextIntent, func(s *evalState) string { return s.in.Context.Intent }),
		},
	}
}

// structDef is one object type as the checker and the interpreter see it.
type structDef struct {
	typ    *types.Type
	names  []string
	fields map[string]*types.FieldType
}

// provider declares the object types on top of CEL's own registry.
type provider struct {
	base    types.Provider
	structs map[string]*structDef
	kinds   [numKinds]*types.Type
}

var _ types.Provider = (*provider)(nil)

// newProvider builds the type provider of one policy; lookupIDs are the
// fields of interlock.Lookups.
func newProvider(lookupIDs []string) (*provider, error) {
	base, err := types.NewRegistry()
	if err != nil {
		return nil, fmt.Errorf("policy: CEL registry: %w", err)
	}
	p := &provider{base: base, structs: map[string]*structDef{}}
	for name, defs := range objectFields() {
		sd := &structDef{typ: types.NewObjectType(name), fields: map[string]*types.FieldType{}}
		for _, f := range defs {
			sd.names = append(sd.names, f.name)
			sd.fields[f.name] = objectField(f)
		}
		p.structs[name] = sd
	}
	lk := &structDef{typ: types.NewObjectType(typeLookups), fields: map[string]*types.FieldType{}}
	for i, id := range lookupIDs {
		lk.names = append(lk.names, id)
		lk.fields[id] = lookupField(i)
	}
	p.structs[typeLookups] = lk
	bd := &structDef{typ: types.NewObjectType(typeBudget), fields: map[string]*types.FieldType{}}
	for _, f := range []string{"total", "limit", "remaining"} {
		bd.names = append(bd.names, f)
		bd.fields[f] = budgetField(f)
	}
	p.structs[typeBudget] = bd
	p.kinds = [numKinds]*types.Type{
		kindAgent:   p.structs[typeAgent].typ,
		kindOwner:   p.structs[typeOwner].typ,
		kindTool:    p.structs[typeTool].typ,
		kindCall:    p.structs[typeCall].typ,
		kindContext: p.structs[typeContext].typ,
		kindLookups: lk.typ,
	}
	return p, nil
}

func alwaysSet(any) bool { return true }

func objectField(f fieldDef) *types.FieldType {
	isSet := alwaysSet
	if f.isSet != nil {
		isSet = func(target any) bool {
			o, ok := target.(*objVal)
			return ok && f.isSet(o.st)
		}
	}
	slot := f.slot
	get := f.get
	return &types.FieldType{
		Type:  f.typ,
		IsSet: isSet,
		GetFrom: func(target any) (any, error) {
			o, ok := target.(*objVal)
			if !ok {
				return nil, fmt.Errorf("no field %s on %T", f.name, target)
			}
			s := o.st
			if v := s.cache[slot]; v != nil {
				return v, nil
			}
			v, err := get(s)
			if err != nil {
				return nil, err
			}
			s.cache[slot] = v
			s.cacheSet |= 1 << slot
			return v, nil
		},
	}
}

func lookupField(i int) *types.FieldType {
	return &types.FieldType{
		Type:  types.BoolType,
		IsSet: alwaysSet,
		GetFrom: func(target any) (any, error) {
			o, ok := target.(*objVal)
			if !ok {
				return nil, fmt.Errorf("no lookup on %T", target)
			}
			return o.st.lookup(i)
		},
	}
}

func budgetField(name string) *types.FieldType {
	return &types.FieldType{
		Type:  types.DoubleType,
		IsSet: alwaysSet,
		GetFrom: func(target any) (any, error) {
			b, ok := target.(*budgetVal)
			if !ok {
				return nil, fmt.Errorf("no field %s on %T", name, target)
			}
			switch name {
			case "total":
				return types.Double(b.total), nil
			case "limit":
				return types.Double(b.limit), nil
			default:
				return types.Double(b.limit - b.total), nil
			}
		},
	}
}

// EnumValue implements types.Provider.
func (p *provider) EnumValue(name string) ref.Val { return p.base.EnumValue(name) }

// FindIdent implements types.Provider.
func (p *provider) FindIdent(name string) (ref.Val, bool) { return p.base.FindIdent(name) }

// FindStructType implements types.Provider.
func (p *provider) FindStructType(name string) (*types.Type, bool) {
	if sd, ok := p.structs[name]; ok {
		return types.NewTypeTypeWithParam(sd.typ), true
	}
	return p.base.FindStructType(name)
}

// FindStructFieldNames implements types.Provider.
func (p *provider) FindStructFieldNames(name string) ([]string, bool) {
	if sd, ok := p.structs[name]; ok {
		return sd.names, true
	}
	return p.base.FindStructFieldNames(name)
}

// FindStructFieldType implements types.Provider.
func (p *provider) FindStructFieldType(name, field string) (*types.FieldType, bool) {
	if sd, ok := p.structs[name]; ok {
		ft, ok := sd.fields[field]
		return ft, ok
	}
	return p.base.FindStructFieldType(name, field)
}

// NewValue implements types.Provider; policy objects cannot be built in
// expressions.
func (p *provider) NewValue(name string, fields map[string]ref.Val) ref.Val {
	if _, ok := p.structs[name]; ok {
		return types.NewErr("%s values cannot be created in a policy expression", name)
	}
	return p.base.NewValue(name, fields)
}

// objVal is an object variable (agent, owner, tool, call, context,
// lookup) of one decision: a view of the evaluation state.
type objVal struct {
	kind objKind
	st   *evalState
}

var _ ref.Val = (*objVal)(nil)

// ConvertToNative implements ref.Val.
func (o *objVal) ConvertToNative(t reflect.Type) (any, error) {
	return nil, fmt.Errorf("%s cannot be converted to %v", o.Type().TypeName(), t)
}

// ConvertToType implements ref.Val.
func (o *objVal) ConvertToType(t ref.Type) ref.Val {
	if t == types.TypeType {
		return o.st.p.prov.kinds[o.kind]
	}
	return types.NewErr("%s cannot be converted to %s", o.Type().TypeName(), t.TypeName())
}

// Equal implements ref.Val.
func (o *objVal) Equal(other ref.Val) ref.Val { return types.Bool(o == other) }

// Type implements ref.Val.
func (o *objVal) Type() ref.Type { return o.st.p.prov.kinds[o.kind] }

// Value implements ref.Val.
func (o *objVal) Value() any { return o }

// budgetVal is one entry of the budget variable.
type budgetVal struct {
	total, limit float64
	typ          *types.Type
}

var _ ref.Val = (*budgetVal)(nil)

// ConvertToNative implements ref.Val.
func (b *budgetVal) ConvertToNative(t reflect.Type) (any, error) {
	if t.Kind() == reflect.Map && t.Key().Kind() == reflect.String {
		return map[string]any{"total": b.total, "limit": b.limit, "remaining": b.limit - b.total}, nil
	}
	return nil, fmt.Errorf("%s cannot be converted to %v", typeBudget, t)
}

// ConvertToType implements ref.Val.
func (b *budgetVal) ConvertToType(t ref.Type) ref.Val {
	if t == types.TypeType {
		return b.typ
	}
	return types.NewErr("%s cannot be converted to %s", typeBudget, t.TypeName())
}

// Equal implements ref.Val.
func (b *budgetVal) Equal(other ref.Val) ref.Val {
	o, ok := other.(*budgetVal)
	return types.Bool(ok && o.total == b.total && o.limit == b.limit)
}

// Type implements ref.Val.
func (b *budgetVal) Type() ref.Type { return b.typ }

// Value implements ref.Val.
func (b *budgetVal) Value() any { return b }

// activation is the evaluation state seen as a CEL activation.
var _ interpreter.Activation = (*evalState)(nil)

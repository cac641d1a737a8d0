package main

import (
	"context"
	"errors"
	"fmt"
	"sort"

	"github.com/hashicorp/terraform-plugin-framework/diag"
	"github.com/hashicorp/terraform-plugin-framework/path"
	"github.com/hashicorp/terraform-plugin-framework/resource"
	"github.com/hashicorp/terraform-plugin-framework/resource/schema"
	"github.com/hashicorp/terraform-plugin-framework/resource/schema/planmodifier"
	"github.com/hashicorp/terraform-plugin-framework/resource/schema/stringplanmodifier"
	"github.com/hashicorp/terraform-plugin-framework/types"

	"github.com/kindlingboot/kindling/groups"
	"github.com/kindlingboot/kindling/matchbox/api/client"
)

// groupResource is kindling_group: one groups/NAME.json on the server.
type groupResource struct{ api *client.Client }

func newGroupResource() resource.Resource { return &groupResource{} }

type groupModel struct {
	Name     types.String  `tfsdk:"name"`
	Profile  types.String  `tfsdk:"profile"`
	Selector types.Map     `tfsdk:"selector"`
	Metadata types.Dynamic `tfsdk:"metadata"`
}

var (
	_ resource.ResourceWithConfigure      = (*groupResource)(nil)
	_ resource.ResourceWithImportState    = (*groupResource)(nil)
	_ resource.ResourceWithValidateConfig = (*groupResource)(nil)
)

func (r *groupResource) Metadata(_ context.Context, req resource.MetadataRequest, resp *resource.MetadataResponse) {
	resp.TypeName = req.ProviderTypeName + "_group"
}

func (r *groupResource) Schema(_ context.Context, _ resource.SchemaRequest, resp *resource.SchemaResponse) {
	resp.Schema = schema.Schema{
		Description: "A Kindling group: machines whose labels match the selector boot the profile, with the metadata in their templates. Stored as groups/NAME.json. Import with the group's id.",
		Attributes: map[string]schema.Attribute{
			"name": schema.StringAttribute{
				Required:      true,
				Description:   "The group's id (groups/NAME.json): " + groups.IDRule + ". Changing it replaces the group.",
				PlanModifiers: []planmodifier.String{stringplanmodifier.RequiresReplace()},
			},
			"profile": schema.StringAttribute{
				Required:    true,
				Description: "The id of the profile the group's machines boot (usually kindling_profile.NAME.name).",
			},
			"selector": schema.MapAttribute{
				Optional:    true,
				ElementType: types.StringType,
				Description: "Labels a machine must carry (mac, uuid, hostname, serial, arch, or any query parameter). Omitted or empty: the group matches every machine (a default group).",
			},
			"metadata": schema.DynamicAttribute{
				Optional:    true,
				Description: "Values for the profile's templates: an object of any nesting (strings, numbers, bools, lists, objects), stored as the group's JSON metadata.",
			},
		},
	}
}

func (r *groupResource) Configure(_ context.Context, req resource.ConfigureRequest, resp *resource.ConfigureResponse) {
	r.api = configuredClient(req.ProviderData, &resp.Diagnostics)
}

func (r *groupResource) ValidateConfig(ctx context.Context, req resource.ValidateConfigRequest, resp *resource.ValidateConfigResponse) {
	var m groupModel
	resp.Diagnostics.Append(req.Config.Get(ctx, &m)...)
	if resp.Diagnostics.HasError() {
		return
	}
	if v := m.Name; !v.IsNull() && !v.IsUnknown() && !groups.ValidID(v.ValueString()) {
		resp.Diagnostics.AddAttributeError(path.Root("name"), "Invalid group name",
			fmt.Sprintf("name %q is not a valid group id (%s)", v.ValueString(), groups.IDRule))
	}
	if !m.Selector.IsNull() && !m.Selector.IsUnknown() {
		seen := map[string]string{}
		for k, v := range m.Selector.Elements() {
			s, ok := v.(types.String)
			if !ok || s.IsNull() || s.IsUnknown() {
				continue
			}
			nk := groups.NormalizeKey(k)
			if other, dup := seen[nk]; dup {
				resp.Diagnostics.AddAttributeError(path.Root("selector").AtMapKey(k), "Invalid selector",
					fmt.Sprintf("selector keys %q and %q are the same label (keys are case-insensitive); keep one", other, k))
			}
			seen[nk] = k
			if _, err := groups.NormalizeValue(nk, s.ValueString()); err != nil {
				resp.Diagnostics.AddAttributeError(path.Root("selector").AtMapKey(k), "Invalid selector", err.Error())
			}
		}
	}
	if d := m.Metadata; !d.IsNull() && !d.IsUnknown() && !d.IsUnderlyingValueNull() && !d.IsUnderlyingValueUnknown() {
		if _, err := metadataJSON(ctx, d); err != nil && !errors.Is(err, errUnknown) {
			resp.Diagnostics.AddAttributeError(path.Root("metadata"), "Invalid metadata", err.Error())
		}
	}
}

// group builds the group the plan describes.
func (m groupModel) group(ctx context.Context) (*groups.Group, error) {
	g := &groups.Group{
		ID:      m.Name.ValueString(),
		Name:    m.Name.ValueString(),
		Profile: m.Profile.ValueString(),
	}
	if !m.Selector.IsNull() {
		g.Selector = groups.Selector{}
		for k, v := range m.Selector.Elements() {
			s, ok := v.(types.String)
			if !ok || s.IsNull() || s.IsUnknown() {
				return nil, fmt.Errorf("selector %q: value is not a known string", k)
			}
			g.Selector[k] = []string{s.ValueString()}
		}
	}
	md, err := metadataJSON(ctx, m.Metadata)
	if err != nil {
		return nil, err
	}
	g.Metadata = md
	return g, nil
}

func (r *groupResource) Create(ctx context.Context, req resource.CreateRequest, resp *resource.CreateResponse) {
	var plan groupModel
	resp.Diagnostics.Append(req.Plan.Get(ctx, &plan)...)
	if resp.Diagnostics.HasError() {
		return
	}
	r.put(ctx, plan, false, &resp.Diagnostics)
	if resp.Diagnostics.HasError() {
		return
	}
	resp.Diagnostics.Append(resp.State.Set(ctx, plan)...)
}

func (r *groupResource) Update(ctx context.Context, req resource.UpdateRequest, resp *resource.UpdateResponse) {
	var plan groupModel
	resp.Diagnostics.Append(req.Plan.Get(ctx, &plan)...)
	if resp.Diagnostics.HasError() {
		return
	}
	r.put(ctx, plan, true, &resp.Diagnostics)
	if resp.Diagnostics.HasError() {
		return
	}
	resp.Diagnostics.Append(resp.State.Set(ctx, plan)...)
}

// put writes the group. An update keeps the group's description (its JSON
// "name", which the resource does not manage) as the server has it, so
// updating an imported group does not lose it.
func (r *groupResource) put(ctx context.Context, plan groupModel, update bool, diags *diag.Diagnostics) {
	g, err := plan.group(ctx)
	if err != nil {
		diags.AddError("Writing Kindling group "+plan.Name.ValueString(), err.Error())
		return
	}
	if update {
		cur, err := r.api.GroupGet(ctx, g.ID)
		switch {
		case client.IsNotFound(err):
		case err != nil:
			diags.AddError("Writing Kindling group "+g.ID, err.Error())
			return
		case cur.Name != "":
			g.Name = cur.Name
		}
	}
	if _, err := r.api.GroupPut(ctx, g); err != nil {
		diags.AddError("Writing Kindling group "+g.ID, err.Error())
	}
}

func (r *groupResource) Read(ctx context.Context, req resource.ReadRequest, resp *resource.ReadResponse) {
	var prior groupModel
	resp.Diagnostics.Append(req.State.Get(ctx, &prior)...)
	if resp.Diagnostics.HasError() {
		return
	}
	id := prior.Name.ValueString()
	g, err := r.api.GroupGet(ctx, id)
	if client.IsNotFound(err) {
		// Gone from the server: the next plan creates it again.
		resp.State.RemoveResource(ctx)
		return
	}
	if err != nil {
		// Anything else (refused, timeout, 5xx) is an error, never a
		// removal: an outage must not drop resources from state.
		resp.Diagnostics.AddError("Reading Kindling group "+id, err.Error())
		return
	}
	next, err := groupState(ctx, prior, g)
	if err != nil {
		resp.Diagnostics.AddError("Reading Kindling group "+id, err.Error())
		return
	}
	resp.Diagnostics.Append(resp.State.Set(ctx, next)...)
}

// groupState is the state for group g as read from the server. Where the
// server's form means the same as the prior state (a MAC spelled in
// another case, metadata written as a map instead of an object, an empty
// selector the server omits), the prior value stays, so a read never shows
// drift that is not there.
func groupState(ctx context.Context, prior groupModel, g *groups.Group) (groupModel, error) {
	next := groupModel{
		Name:     types.StringValue(g.ID),
		Profile:  types.StringValue(g.Profile),
		Selector: prior.Selector,
		Metadata: prior.Metadata,
	}
	if !sameSelector(prior.Selector, g.Selector) {
		sel, err := selectorValue(g.ID, g.Selector)
		if err != nil {
			return next, err
		}
		next.Selector = sel
	}
	priorMD, err := metadataJSON(ctx, prior.Metadata)
	if err != nil || prior.Metadata.IsUnknown() || !sameJSON(priorMD, g.Metadata) {
		md, err := metadataValue(ctx, g.Metadata)
		if err != nil {
			return next, fmt.Errorf("group %s: %w", g.ID, err)
		}
		next.Metadata = md
	}
	return next, nil
}

// sameSelector reports whether the selector in state selects the same
// machines as the server's (after the server's normalisation of keys and
// MAC/UUID values).
func sameSelector(prior types.Map, sel groups.Selector) bool {
	if prior.IsUnknown() {
		return false
	}
	want := map[string][]string{}
	for k, v := range prior.Elements() {
		s, ok := v.(types.String)
		if !ok || s.IsNull() || s.IsUnknown() {
			return false
		}
		nk := groups.NormalizeKey(k)
		nv, err := groups.NormalizeValue(nk, s.ValueString())
		if err != nil {
			return false
		}
		want[nk] = []string{nv}
	}
	if len(want) != len(sel) {
		return false
	}
	for k, vs := range sel {
		nk := groups.NormalizeKey(k)
		w, ok := want[nk]
		if !ok || len(vs) != 1 {
			return false
		}
		nv, err := groups.NormalizeValue(nk, vs[0])
		if err != nil || nv != w[0] {
			return false
		}
	}
	return true
}

// selectorValue is the server's selector as a map of strings; empty is
// null. A key with several values (possible in a hand-written group file)
// has no map-of-string form and is an error naming it.
func selectorValue(id string, sel groups.Selector) (types.Map, error) {
	if len(sel) == 0 {
		return types.MapNull(types.StringType), nil
	}
	keys := make([]string, 0, len(sel))
	for k := range sel {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	m := make(map[string]string, len(sel))
	for _, k := range keys {
		vs := sel[k]
		if len(vs) != 1 {
			return types.MapNull(types.StringType), fmt.Errorf("group %s: selector %q has %d values %q; kindling_group holds one value per key: split the group, or manage it outside Terraform", id, k, len(vs), vs)
		}
		m[k] = vs[0]
	}
	v, diags := types.MapValueFrom(context.Background(), types.StringType, m)
	if diags.HasError() {
		return types.MapNull(types.StringType), fmt.Errorf("group %s: selector: %v", id, diags)
	}
	return v, nil
}

func (r *groupResource) Delete(ctx context.Context, req resource.DeleteRequest, resp *resource.DeleteResponse) {
	var prior groupModel
	resp.Diagnostics.Append(req.State.Get(ctx, &prior)...)
	if resp.Diagnostics.HasError() {
		return
	}
	if err := r.api.GroupDelete(ctx, prior.Name.ValueString()); err != nil {
		resp.Diagnostics.AddError("Deleting Kindling group "+prior.Name.ValueString(), err.Error())
	}
}

func (r *groupResource) ImportState(ctx context.Context, req resource.ImportStateRequest, resp *resource.ImportStateResponse) {
	resource.ImportStatePassthroughID(ctx, path.Root("name"), req, resp)
}

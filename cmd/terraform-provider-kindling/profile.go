package main

import (
	"context"
	"fmt"
	"strings"

	"github.com/hashicorp/terraform-plugin-framework/attr"
	"github.com/hashicorp/terraform-plugin-framework/diag"
	"github.com/hashicorp/terraform-plugin-framework/path"
	"github.com/hashicorp/terraform-plugin-framework/resource"
	"github.com/hashicorp/terraform-plugin-framework/resource/schema"
	"github.com/hashicorp/terraform-plugin-framework/resource/schema/planmodifier"
	"github.com/hashicorp/terraform-plugin-framework/resource/schema/stringplanmodifier"
	"github.com/hashicorp/terraform-plugin-framework/types"

	"github.com/kindlingboot/kindling/matchbox/api/client"
	"github.com/kindlingboot/kindling/profiles"
)

// profileResource is kindling_profile: profiles/NAME.json plus the files
// it owns, ignition/NAME.ign (raw_ignition) or ignition/NAME.yaml
// (butane), and generic/NAME (generic).
type profileResource struct{ api *client.Client }

func newProfileResource() resource.Resource { return &profileResource{} }

type profileModel struct {
	Name        types.String `tfsdk:"name"`
	Kernel      types.String `tfsdk:"kernel"`
	Initrd      types.List   `tfsdk:"initrd"`
	Args        types.List   `tfsdk:"args"`
	RawIgnition types.String `tfsdk:"raw_ignition"`
	Butane      types.String `tfsdk:"butane"`
	Generic     types.String `tfsdk:"generic"`
}

var (
	_ resource.ResourceWithConfigure      = (*profileResource)(nil)
	_ resource.ResourceWithImportState    = (*profileResource)(nil)
	_ resource.ResourceWithValidateConfig = (*profileResource)(nil)
)

// The file names a profile's configs are stored under.
func ignitionName(profile string) string { return profile + ".ign" }
func butaneName(profile string) string   { return profile + ".yaml" }
func genericName(profile string) string  { return profile }

func (r *profileResource) Metadata(_ context.Context, req resource.MetadataRequest, resp *resource.MetadataResponse) {
	resp.TypeName = req.ProviderTypeName + "_profile"
}

func (r *profileResource) Schema(_ context.Context, _ resource.SchemaRequest, resp *resource.SchemaResponse) {
	resp.Schema = schema.Schema{
		Description: "A Kindling profile: what a machine boots (kernel, initrd, args) and the config it gets. Stored as profiles/NAME.json, with raw_ignition in ignition/NAME.ign, butane in ignition/NAME.yaml and generic in generic/NAME. Import with the profile's id.",
		Attributes: map[string]schema.Attribute{
			"name": schema.StringAttribute{
				Required:      true,
				Description:   "The profile's id (profiles/NAME.json): " + profiles.IDRule + ". Changing it replaces the profile.",
				PlanModifiers: []planmodifier.String{stringplanmodifier.RequiresReplace()},
			},
			"kernel": schema.StringAttribute{
				Optional:    true,
				Description: "Kernel path or URL (a template: {{.request.query.mac}} and metadata work). Required with initrd or args; omit all three for a config-only profile.",
			},
			"initrd": schema.ListAttribute{
				Optional:    true,
				ElementType: types.StringType,
				Description: "Initramfs paths or URLs, in load order.",
			},
			"args": schema.ListAttribute{
				Optional:    true,
				ElementType: types.StringType,
				Description: "Kernel command-line arguments.",
			},
			"raw_ignition": schema.StringAttribute{
				Optional:    true,
				Description: "An Ignition config (JSON, spec 3.x), served as is. Conflicts with butane.",
			},
			"butane": schema.StringAttribute{
				Optional:    true,
				Description: "A Butane config (YAML), a template over the group's metadata, transpiled to Ignition per machine. Conflicts with raw_ignition.",
			},
			"generic": schema.StringAttribute{
				Optional:    true,
				Description: "A generic template served at /generic (cloud-init, preseed, kickstart…).",
			},
		},
	}
}

func (r *profileResource) Configure(_ context.Context, req resource.ConfigureRequest, resp *resource.ConfigureResponse) {
	r.api = configuredClient(req.ProviderData, &resp.Diagnostics)
}

func (r *profileResource) ValidateConfig(ctx context.Context, req resource.ValidateConfigRequest, resp *resource.ValidateConfigResponse) {
	var m profileModel
	resp.Diagnostics.Append(req.Config.Get(ctx, &m)...)
	if resp.Diagnostics.HasError() {
		return
	}
	if v := m.Name; !v.IsNull() && !v.IsUnknown() && !profiles.ValidID(v.ValueString()) {
		resp.Diagnostics.AddAttributeError(path.Root("name"), "Invalid profile name",
			fmt.Sprintf("name %q is not a valid profile id (%s)", v.ValueString(), profiles.IDRule))
	}
	if !m.RawIgnition.IsNull() && !m.Butane.IsNull() {
		resp.Diagnostics.AddAttributeError(path.Root("butane"), "Conflicting profile configs",
			"raw_ignition and butane both set: a profile has one Ignition config; keep one of them")
	}
	if k := m.Kernel; !k.IsNull() && !k.IsUnknown() && strings.TrimSpace(k.ValueString()) == "" {
		resp.Diagnostics.AddAttributeError(path.Root("kernel"), "Empty kernel",
			"kernel is empty: give the kernel's path or URL, or omit kernel, initrd and args for a config-only profile")
	}
	if m.Kernel.IsNull() && (!m.Initrd.IsNull() || !m.Args.IsNull()) {
		resp.Diagnostics.AddAttributeError(path.Root("kernel"), "Missing kernel",
			"initrd or args without kernel: a boot section needs a kernel; set kernel, or drop initrd and args for a config-only profile")
	}
}

// profile builds the profile the plan describes; its ignition_id and
// generic_id name the files the provider writes for it.
func (m profileModel) profile() (*profiles.Profile, error) {
	id := m.Name.ValueString()
	p := &profiles.Profile{ID: id, Name: id}
	if !m.Kernel.IsNull() {
		initrd, err := stringList(m.Initrd, "initrd")
		if err != nil {
			return nil, err
		}
		args, err := stringList(m.Args, "args")
		if err != nil {
			return nil, err
		}
		p.Boot = &profiles.Boot{Kernel: m.Kernel.ValueString(), Initrd: initrd, Args: args}
	}
	switch {
	case !m.RawIgnition.IsNull():
		p.IgnitionID = ignitionName(id)
	case !m.Butane.IsNull():
		p.IgnitionID = butaneName(id)
	}
	if !m.Generic.IsNull() {
		p.GenericID = genericName(id)
	}
	return p, nil
}

// keepUnmanaged copies into p the fields of cur that kindling_profile does
// not manage.
func keepUnmanaged(p, cur *profiles.Profile) {
	if cur.Name != "" {
		p.Name = cur.Name
	}
	p.IPXETemplate, p.GRUBTemplate, p.CloudID = cur.IPXETemplate, cur.GRUBTemplate, cur.CloudID
}

func stringList(l types.List, field string) ([]string, error) {
	if l.IsNull() {
		return nil, nil
	}
	out := make([]string, 0, len(l.Elements()))
	for i, v := range l.Elements() {
		s, ok := v.(types.String)
		if !ok || s.IsNull() || s.IsUnknown() {
			return nil, fmt.Errorf("%s[%d]: not a known string", field, i)
		}
		out = append(out, s.ValueString())
	}
	return out, nil
}

func (r *profileResource) Create(ctx context.Context, req resource.CreateRequest, resp *resource.CreateResponse) {
	var plan profileModel
	resp.Diagnostics.Append(req.Plan.Get(ctx, &plan)...)
	if resp.Diagnostics.HasError() {
		return
	}
	r.write(ctx, profileModel{}, plan, &resp.Diagnostics)
	if resp.Diagnostics.HasError() {
		return
	}
	resp.Diagnostics.Append(resp.State.Set(ctx, plan)...)
}

func (r *profileResource) Update(ctx context.Context, req resource.UpdateRequest, resp *resource.UpdateResponse) {
	var plan, prior profileModel
	resp.Diagnostics.Append(req.Plan.Get(ctx, &plan)...)
	resp.Diagnostics.Append(req.State.Get(ctx, &prior)...)
	if resp.Diagnostics.HasError() {
		return
	}
	r.write(ctx, prior, plan, &resp.Diagnostics)
	if resp.Diagnostics.HasError() {
		return
	}
	resp.Diagnostics.Append(resp.State.Set(ctx, plan)...)
}

// write stores plan: first the files the profile will refer to, then the
// profile, then removes the files prior had that plan no longer has (the
// server refuses a profile naming a missing file, and refuses nothing
// when an unreferenced file goes).
func (r *profileResource) write(ctx context.Context, prior, plan profileModel, diags *diag.Diagnostics) {
	id := plan.Name.ValueString()
	p, err := plan.profile()
	if err != nil {
		diags.AddError("Writing Kindling profile "+id, err.Error())
		return
	}
	fail := func(what string, err error) {
		diags.AddError("Writing Kindling profile "+id, fmt.Sprintf("%s: %v", what, err))
	}
	if !prior.Name.IsNull() {
		// An update keeps what the resource does not manage (description,
		// iPXE and GRUB templates, cloud_id) as the server has it, so
		// updating an imported profile does not lose them.
		cur, err := r.api.ProfileGet(ctx, id)
		switch {
		case client.IsNotFound(err):
		case err != nil:
			fail("reading the current profile", err)
			return
		default:
			keepUnmanaged(p, cur)
		}
	}
	switch {
	case !plan.RawIgnition.IsNull():
		if err := r.api.IgnitionPut(ctx, ignitionName(id), []byte(plan.RawIgnition.ValueString())); err != nil {
			fail("raw_ignition (ignition/"+ignitionName(id)+")", err)
			return
		}
	case !plan.Butane.IsNull():
		if err := r.api.IgnitionPut(ctx, butaneName(id), []byte(plan.Butane.ValueString())); err != nil {
			fail("butane (ignition/"+butaneName(id)+")", err)
			return
		}
	}
	if !plan.Generic.IsNull() {
		if err := r.api.GenericPut(ctx, genericName(id), []byte(plan.Generic.ValueString())); err != nil {
			fail("generic (generic/"+genericName(id)+")", err)
			return
		}
	}
	if _, err := r.api.ProfilePut(ctx, p); err != nil {
		fail("profile", err)
		return
	}
	if !prior.RawIgnition.IsNull() && plan.RawIgnition.IsNull() {
		if err := r.api.IgnitionDelete(ctx, ignitionName(id)); err != nil {
			fail("removing the old raw_ignition (ignition/"+ignitionName(id)+")", err)
		}
	}
	if !prior.Butane.IsNull() && plan.Butane.IsNull() {
		if err := r.api.IgnitionDelete(ctx, butaneName(id)); err != nil {
			fail("removing the old butane (ignition/"+butaneName(id)+")", err)
		}
	}
	if !prior.Generic.IsNull() && plan.Generic.IsNull() {
		if err := r.api.GenericDelete(ctx, genericName(id)); err != nil {
			fail("removing the old generic (generic/"+genericName(id)+")", err)
		}
	}
}

func (r *profileResource) Read(ctx context.Context, req resource.ReadRequest, resp *resource.ReadResponse) {
	var prior profileModel
	resp.Diagnostics.Append(req.State.Get(ctx, &prior)...)
	if resp.Diagnostics.HasError() {
		return
	}
	id := prior.Name.ValueString()
	p, err := r.api.ProfileGet(ctx, id)
	if client.IsNotFound(err) {
		// Gone from the server: the next plan creates it again.
		resp.State.RemoveResource(ctx)
		return
	}
	if err != nil {
		// Anything else (refused, timeout, 5xx) is an error, never a
		// removal: an outage must not drop resources from state.
		resp.Diagnostics.AddError("Reading Kindling profile "+id, err.Error())
		return
	}
	next := profileState(prior, p)
	// The files the profile refers to. A missing one reads as unset (the
	// next apply writes it again); any other failure is an error.
	next.RawIgnition, next.Butane, next.Generic = types.StringNull(), types.StringNull(), types.StringNull()
	if name := p.IgnitionID; name != "" {
		b, err := r.api.IgnitionGet(ctx, name)
		switch {
		case client.IsNotFound(err):
		case err != nil:
			resp.Diagnostics.AddError("Reading Kindling profile "+id, fmt.Sprintf("ignition/%s: %v", name, err))
			return
		case profiles.IsRawIgnition(name):
			next.RawIgnition = types.StringValue(string(b))
		default:
			next.Butane = types.StringValue(string(b))
		}
	}
	if name := p.GenericID; name != "" {
		b, err := r.api.GenericGet(ctx, name)
		switch {
		case client.IsNotFound(err):
		case err != nil:
			resp.Diagnostics.AddError("Reading Kindling profile "+id, fmt.Sprintf("generic/%s: %v", name, err))
			return
		default:
			next.Generic = types.StringValue(string(b))
		}
	}
	resp.Diagnostics.Append(resp.State.Set(ctx, next)...)
}

// profileState is the state for profile p as read from the server, keeping
// the prior form where the server's means the same (an empty list the
// server omits stays an empty list, not null).
func profileState(prior profileModel, p *profiles.Profile) profileModel {
	next := profileModel{Name: types.StringValue(p.ID)}
	var b profiles.Boot
	if p.Boot != nil {
		b = *p.Boot
	}
	next.Kernel = stringState(prior.Kernel, b.Kernel)
	next.Initrd = listState(prior.Initrd, b.Initrd)
	next.Args = listState(prior.Args, b.Args)
	return next
}

// stringState is s; an empty s is null, or the prior empty string (the
// server cannot tell them apart).
func stringState(prior types.String, s string) types.String {
	if s != "" {
		return types.StringValue(s)
	}
	if !prior.IsNull() && !prior.IsUnknown() && prior.ValueString() == "" {
		return prior
	}
	return types.StringNull()
}

// listState is the list l; an empty l is null, or the prior empty list
// (the server omits empty lists).
func listState(prior types.List, l []string) types.List {
	if len(l) == 0 {
		if !prior.IsNull() && !prior.IsUnknown() && len(prior.Elements()) == 0 {
			return prior
		}
		return types.ListNull(types.StringType)
	}
	vs := make([]attr.Value, len(l))
	for i, s := range l {
		vs[i] = types.StringValue(s)
	}
	return types.ListValueMust(types.StringType, vs)
}

func (r *profileResource) Delete(ctx context.Context, req resource.DeleteRequest, resp *resource.DeleteResponse) {
	var prior profileModel
	resp.Diagnostics.Append(req.State.Get(ctx, &prior)...)
	if resp.Diagnostics.HasError() {
		return
	}
	id := prior.Name.ValueString()
	fail := func(what string, err error) {
		resp.Diagnostics.AddError("Deleting Kindling profile "+id, fmt.Sprintf("%s: %v", what, err))
	}
	// The profile first: the server refuses to remove a file a profile
	// still names.
	if err := r.api.ProfileDelete(ctx, id); err != nil {
		fail("profile", err)
		return
	}
	if !prior.RawIgnition.IsNull() {
		if err := r.api.IgnitionDelete(ctx, ignitionName(id)); err != nil {
			fail("ignition/"+ignitionName(id), err)
		}
	}
	if !prior.Butane.IsNull() {
		if err := r.api.IgnitionDelete(ctx, butaneName(id)); err != nil {
			fail("ignition/"+butaneName(id), err)
		}
	}
	if !prior.Generic.IsNull() {
		if err := r.api.GenericDelete(ctx, genericName(id)); err != nil {
			fail("generic/"+genericName(id), err)
		}
	}
}

func (r *profileResource) ImportState(ctx context.Context, req resource.ImportStateRequest, resp *resource.ImportStateResponse) {
	resource.ImportStatePassthroughID(ctx, path.Root("name"), req, resp)
}

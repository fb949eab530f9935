package grid

import (
	"context"
	"fmt"
	"maps"
	"slices"
	"sort"
	"strings"
	"sync"
	"time"

	"golang.org/x/sync/errgroup"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/equality"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/client-go/tools/events"
	"k8s.io/client-go/util/workqueue"
	"k8s.io/utils/clock"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/builder"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/controller"
	"sigs.k8s.io/controller-runtime/pkg/controller/controllerutil"
	"sigs.k8s.io/controller-runtime/pkg/event"
	"sigs.k8s.io/controller-runtime/pkg/handler"
	"sigs.k8s.io/controller-runtime/pkg/log"
	"sigs.k8s.io/controller-runtime/pkg/predicate"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"

	sitev1 "github.com/sitegrid/sitegrid/api/site/v1alpha2"
	gridv1 "github.com/sitegrid/sitegrid/api/superedge/v1"
)

// gridSpec is the part of a DeploymentGrid or StatefulSetGrid spec the
// controller reads, for spec type S.
type gridSpec[S any] struct {
	uniqKey     string
	template    *S
	pool        map[string]S
	templates   map[string]string
	defaultName string
	overrides   []gridv1.Override
	rollout     *gridv1.RolloutStrategy
}

// gridStatus points into a grid's status.
type gridStatus struct {
	counts             *gridv1.GridUnitCounts
	conditions         *[]metav1.Condition
	observedGeneration *int64
}

// workloadKind adapts the generic reconciler to one grid kind: G is the grid,
// C the child workload, S its spec.
type workloadKind[G, C client.Object, S any] struct {
	kind         string // the child's kind, for messages
	maxNameLen   int
	newGrid      func() G
	newChild     func() C
	listChildren func(ctx context.Context, c client.Client, ns, grid string) ([]C, error)
	spec         func(G) gridSpec[S]
	status       func(G) gridStatus
	setStates    func(G, map[string]C)
	access       func(*S) workloadSpec
	childSpec    func(C) *S
	copySpec     func(*S) *S
	// statusValue is the grid's whole status, for change detection.
	statusValue func(G) any
	// available reports whether the child runs its current spec, with every
	// replica updated and ready.
	available func(C) bool
}

// WorkloadGridReconciler reconciles one grid kind.
type workloadGridReconciler[G, C client.Object, S any] struct {
	client client.Client
	// apiReader reads from the apiserver, for objects the cache leaves out.
	apiReader client.Reader
	recorder  events.EventRecorder
	clock     clock.PassiveClock
	// grace is how long a child outlives the last node of its unit.
	grace time.Duration
	k     workloadKind[G, C, S]
	// hashes remembers each unit's desired hash per grid generation, so a
	// reconcile does not rebuild the spec of a unit whose child is current.
	hashes hashCache
}

// hashCache maps grid UID -> generation and unit value -> desired hash.
type hashCache struct {
	mu    sync.Mutex
	grids map[types.UID]*gridHashes
	uids  map[types.NamespacedName]types.UID
}

type gridHashes struct {
	generation int64
	byValue    map[string]string
}

func (h *hashCache) get(uid types.UID, gen int64, value string) (string, bool) {
	h.mu.Lock()
	defer h.mu.Unlock()
	g := h.grids[uid]
	if g == nil || g.generation != gen {
		return "", false
	}
	v, ok := g.byValue[value]
	return v, ok
}

func (h *hashCache) put(uid types.UID, gen int64, value, hash string) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.grids == nil {
		h.grids = map[types.UID]*gridHashes{}
	}
	g := h.grids[uid]
	if g == nil || g.generation != gen {
		g = &gridHashes{generation: gen, byValue: map[string]string{}}
		h.grids[uid] = g
	}
	g.byValue[value] = hash
}

// remember ties a grid's name to its UID, so a deleted grid's entry can be
// dropped by name.
func (h *hashCache) remember(name types.NamespacedName, uid types.UID) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.uids == nil {
		h.uids = map[types.NamespacedName]types.UID{}
	}
	if old, ok := h.uids[name]; ok && old != uid {
		delete(h.grids, old)
	}
	h.uids[name] = uid
}

func (h *hashCache) forgetName(name types.NamespacedName) {
	h.mu.Lock()
	defer h.mu.Unlock()
	delete(h.grids, h.uids[name])
	delete(h.uids, name)
}

const defaultProgressDeadline = 600 * time.Second

// unitPlan is the desired state of one unit.
type unitPlan[C client.Object, S any] struct {
	value string
	name  string
	spec  *S
	hash  string
	child C // zero if none
	has   bool
}

// Reconcile orchestrates one grid: desired children, creates, staged
// updates, removal of vanished units, status.
func (r *workloadGridReconciler[G, C, S]) Reconcile(ctx context.Context, req reconcile.Request) (reconcile.Result, error) {
	grid := r.k.newGrid()
	if err := r.client.Get(ctx, req.NamespacedName, grid); err != nil {
		if apierrors.IsNotFound(err) {
			r.hashes.forgetName(req.NamespacedName)
		}
		return reconcile.Result{}, client.IgnoreNotFound(err)
	}
	r.hashes.remember(req.NamespacedName, grid.GetUID())
	if grid.GetDeletionTimestamp() != nil {
		return reconcile.Result{}, nil // children go with it (owner references)
	}
	spec := r.k.spec(grid)
	values, err := unitValues(ctx, r.client, spec.uniqKey)
	if err != nil {
		return reconcile.Result{}, err
	}
	children, err := r.k.listChildren(ctx, r.client, grid.GetNamespace(), grid.GetName())
	if err != nil {
		return reconcile.Result{}, err
	}
	byValue := map[string]C{}
	for _, c := range children {
		if metav1.IsControlledBy(c, grid) {
			byValue[r.unitValueOf(c, spec.uniqKey)] = c
		}
	}

	updated := grid.DeepCopyObject().(G)
	st := r.k.status(updated)
	var requeue time.Duration
	plans, invalid := r.plan(ctx, grid, spec, values, byValue)
	setValid(st, invalid, grid.GetGeneration())

	conflicts, err := r.createMissing(ctx, grid, plans)
	if err != nil {
		return reconcile.Result{}, err
	}
	setConflict(st, conflicts, r.k.kind, grid.GetGeneration())
	if after, err := r.rollOut(ctx, grid, spec, plans, st); err != nil {
		return reconcile.Result{}, err
	} else if after > 0 {
		requeue = after
	}
	if after, err := r.removeVanished(ctx, grid, values, byValue); err != nil {
		return reconcile.Result{}, err
	} else if after > 0 && (requeue == 0 || after < requeue) {
		requeue = after
	}

	live := map[string]C{}
	for v, c := range byValue {
		if _, ok := values[v]; ok {
			live[v] = c
		}
	}
	for _, p := range plans {
		if p.has {
			live[p.value] = p.child
		}
	}
	r.setStatus(updated, st, live, plans)
	if !equality.Semantic.DeepEqual(r.k.statusValue(grid), r.k.statusValue(updated)) {
		if err := r.client.Status().Patch(ctx, updated, client.MergeFrom(grid)); err != nil {
			return reconcile.Result{}, client.IgnoreNotFound(err)
		}
	}
	return reconcile.Result{RequeueAfter: requeue}, nil
}

// unitValues are the distinct values of the gridUniqKey label on nodes.
func unitValues(ctx context.Context, c client.Client, key string) (map[string]bool, error) {
	var nodes corev1.NodeList
	if err := c.List(ctx, &nodes, client.HasLabels{key}, client.UnsafeDisableDeepCopy); err != nil {
		return nil, err
	}
	values := map[string]bool{}
	for i := range nodes.Items {
		values[nodes.Items[i].Labels[key]] = true
	}
	return values, nil
}

// plan computes every unit's desired spec. Units whose spec cannot be made
// (a bad override) are left out and reported.
func (r *workloadGridReconciler[G, C, S]) plan(ctx context.Context, grid G, spec gridSpec[S], values map[string]bool, byValue map[string]C) ([]*unitPlan[C, S], []string) {
	var plans []*unitPlan[C, S]
	var invalid []string
	cacheable := !needsUnitLabels(spec.overrides) // unit labels can change without a new generation
	for _, value := range slices.Sorted(maps.Keys(values)) {
		c, has := byValue[value]
		if h, ok := r.hashes.get(grid.GetUID(), grid.GetGeneration(), value); ok && cacheable && has && c.GetAnnotations()[gridv1.AnnotationTemplateHash] == h {
			// Current child: no spec needed, nothing will be written.
			plans = append(plans, &unitPlan[C, S]{value: value, name: c.GetName(), hash: h, child: c, has: true})
			continue
		}
		p, err := r.desired(ctx, grid, spec, value, has && r.keepsSuperEdgeSelector(c))
		if err != nil {
			invalid = append(invalid, err.Error())
			continue
		}
		r.hashes.put(grid.GetUID(), grid.GetGeneration(), value, p.hash)
		p.child, p.has = c, has
		plans = append(plans, p)
	}
	return plans, invalid
}

func (r *workloadGridReconciler[G, C, S]) desired(ctx context.Context, grid G, spec gridSpec[S], value string, adopted bool) (*unitPlan[C, S], error) {
	base, _, err := chooseTemplate(spec.template, spec.pool, spec.templates, spec.defaultName, value)
	if err != nil {
		return nil, err
	}
	s := r.k.copySpec(base)
	unit := unitInfo{value: value}
	if needsUnitLabels(spec.overrides) {
		nu := &sitev1.NodeUnit{}
		if err := r.client.Get(ctx, types.NamespacedName{Name: value}, nu); err == nil {
			unit.labels = nu.Labels
		} else if !apierrors.IsNotFound(err) {
			return nil, err
		}
	}
	if s, err = applyOverrides(s, r.k.access, spec.overrides, unit); err != nil {
		return nil, fmt.Errorf("unit %s: %w", value, err)
	}
	if adopted {
		pinByNodeSelector(r.k.access(s), spec.uniqKey, value)
	} else {
		pinToUnit(r.k.access(s), grid.GetName(), spec.uniqKey, value)
	}
	hash, err := specHash(s)
	if err != nil {
		return nil, err
	}
	return &unitPlan[C, S]{value: value, name: ChildName(grid.GetName(), value, r.k.maxNameLen), spec: s, hash: hash}, nil
}

func needsUnitLabels(overrides []gridv1.Override) bool {
	return slices.ContainsFunc(overrides, func(o gridv1.Override) bool { return o.UnitSelector != nil })
}

// createMissing creates the child of every unit that has none, a few at a
// time. A new unit is not part of a staged rollout: it gets the current
// template at once. An object of the child's name that the grid does not own
// is left alone and reported.
func (r *workloadGridReconciler[G, C, S]) createMissing(ctx context.Context, grid G, plans []*unitPlan[C, S]) ([]string, error) {
	var (
		mu        sync.Mutex
		conflicts []string
	)
	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(parallelWrites)
	for _, p := range plans {
		if p.has {
			continue
		}
		g.Go(func() error {
			taken, err := r.createChild(gctx, grid, p)
			if taken {
				mu.Lock()
				conflicts = append(conflicts, p.name)
				mu.Unlock()
			}
			return err
		})
	}
	err := g.Wait()
	sort.Strings(conflicts)
	return conflicts, err
}

// parallelWrites bounds the child writes one reconcile makes at once.
const parallelWrites = 4

// createChild creates a unit's child. The manager caches only objects that
// carry the grid label, so a name taken by someone else shows up as
// AlreadyExists, and is confirmed with a read from the apiserver.
func (r *workloadGridReconciler[G, C, S]) createChild(ctx context.Context, grid G, p *unitPlan[C, S]) (taken bool, err error) {
	child := r.k.newChild()
	child.SetNamespace(grid.GetNamespace())
	child.SetName(p.name)
	r.stamp(child, grid, p)
	*r.k.childSpec(child) = *p.spec
	if err := controllerutil.SetControllerReference(grid, child, r.client.Scheme()); err != nil {
		return false, err
	}
	if err := r.client.Create(ctx, child); err != nil {
		if !apierrors.IsAlreadyExists(err) {
			return false, fmt.Errorf("create %s %s: %w", r.k.kind, p.name, err)
		}
		existing := r.k.newChild()
		if err := r.apiReader.Get(ctx, types.NamespacedName{Namespace: grid.GetNamespace(), Name: p.name}, existing); err != nil {
			return false, client.IgnoreNotFound(err)
		}
		if !metav1.IsControlledBy(existing, grid) {
			return true, nil
		}
		if existing.GetLabels()[gridv1.LabelGridSelector] == grid.GetName() {
			return false, nil // ours, just created: seen on the next pass
		}
		// Ours, but someone removed its grid labels, so the cache lost it:
		// labelled again, it is back in view (its spec is left to the
		// rollout, like any copy's).
		r.label(existing, grid, p)
		if err := r.client.Update(ctx, existing); err != nil {
			return false, fmt.Errorf("re-label %s %s: %w", r.k.kind, p.name, err)
		}
		log.FromContext(ctx).Info("re-labelled a unit copy whose grid labels were removed", "grid", grid.GetName(), "unit", p.value, "child", p.name)
		p.child, p.has = existing, true
		return false, nil
	}
	log.FromContext(ctx).V(1).Info("created unit copy", "grid", grid.GetName(), "unit", p.value, "child", p.name)
	p.child, p.has = child, true
	return false, nil
}

// label sets the labels that tie a child to grid and unit (and put it in
// the manager's cache).
func (r *workloadGridReconciler[G, C, S]) label(child C, grid G, p *unitPlan[C, S]) {
	l := child.GetLabels()
	if l == nil {
		l = map[string]string{}
	}
	l[gridv1.LabelGridSelector] = grid.GetName()
	l[gridv1.LabelGridUniqKey] = r.k.spec(grid).uniqKey
	l[gridv1.LabelGridUnit] = p.value
	child.SetLabels(l)
}

// stamp sets the labels and annotations that tie a child to grid and unit.
func (r *workloadGridReconciler[G, C, S]) stamp(child C, grid G, p *unitPlan[C, S]) {
	r.label(child, grid, p)
	a := child.GetAnnotations()
	if a == nil {
		a = map[string]string{}
	}
	a[gridv1.AnnotationTemplateHash] = p.hash
	a[gridv1.AnnotationUpdatedAt] = r.clock.Now().UTC().Format(time.RFC3339)
	delete(a, gridv1.AnnotationUnitGoneSince)
	child.SetAnnotations(a)
}

// rollOut updates outdated children: all at once without a strategy, else
// at most maxUnavailableUnits units in progress at a time, the next only
// when the updated ones are Available, halting when one misses its
// deadline.
func (r *workloadGridReconciler[G, C, S]) rollOut(ctx context.Context, grid G, spec gridSpec[S], plans []*unitPlan[C, S], st gridStatus) (time.Duration, error) {
	var outdated, inProgress, halted []*unitPlan[C, S]
	deadline := defaultProgressDeadline
	if spec.rollout != nil && spec.rollout.ProgressDeadlineSeconds != nil {
		deadline = time.Duration(*spec.rollout.ProgressDeadlineSeconds) * time.Second
	}
	var requeue time.Duration
	for _, p := range plans {
		if !p.has {
			continue
		}
		if p.child.GetAnnotations()[gridv1.AnnotationTemplateHash] != p.hash {
			outdated = append(outdated, p)
			continue
		}
		if r.k.available(p.child) {
			continue
		}
		since := r.updatedAt(p.child)
		if left := deadline - r.clock.Since(since); left > 0 {
			inProgress = append(inProgress, p)
			if requeue == 0 || left < requeue {
				requeue = left + time.Second
			}
		} else {
			halted = append(halted, p)
		}
	}
	gen := grid.GetGeneration()
	cond := metav1.Condition{Type: gridv1.ConditionRolloutProgressing, ObservedGeneration: gen}
	switch {
	case len(outdated) == 0 && len(inProgress) == 0 && len(halted) == 0:
		cond.Status, cond.Reason, cond.Message = metav1.ConditionFalse, gridv1.ReasonRolloutComplete, "every unit runs the current template"
		meta.SetStatusCondition(st.conditions, cond)
		return requeue, nil
	case spec.rollout != nil && len(halted) > 0:
		names := unitNames(halted)
		cond.Status, cond.Reason = metav1.ConditionFalse, gridv1.ReasonRolloutHalted
		cond.Message = fmt.Sprintf("rollout halted: units %s did not become Available within %s; %d units wait", strings.Join(names, ", "), deadline, len(outdated))
		if !meta.IsStatusConditionPresentAndEqual(*st.conditions, cond.Type, cond.Status) || meta.FindStatusCondition(*st.conditions, cond.Type).Reason != cond.Reason {
			r.recorder.Eventf(grid, nil, corev1.EventTypeWarning, gridv1.ReasonRolloutHalted, "Rollout", "%s", cond.Message)
		}
		meta.SetStatusCondition(st.conditions, cond)
		return requeue, nil
	case spec.rollout != nil && spec.rollout.Paused:
		cond.Status, cond.Reason = metav1.ConditionFalse, gridv1.ReasonRolloutPaused
		cond.Message = fmt.Sprintf("rollout paused with %d units waiting and %d updating", len(outdated), len(inProgress))
		meta.SetStatusCondition(st.conditions, cond)
		return requeue, nil
	}
	budget := len(outdated)
	if spec.rollout != nil {
		budget = maxUnavailable(spec.rollout.MaxUnavailableUnits, len(plans)) - len(inProgress) - len(halted)
	}
	started := 0
	for _, p := range outdated {
		if started >= budget {
			break
		}
		if err := r.update(ctx, grid, p); err != nil {
			return 0, err
		}
		started++
		if requeue == 0 || deadline < requeue {
			requeue = deadline + time.Second
		}
	}
	cond.Status, cond.Reason = metav1.ConditionTrue, gridv1.ReasonRollingOut
	cond.Message = fmt.Sprintf("%d units updating, %d waiting", len(inProgress)+started, len(outdated)-started)
	meta.SetStatusCondition(st.conditions, cond)
	return requeue, nil
}

func (r *workloadGridReconciler[G, C, S]) update(ctx context.Context, grid G, p *unitPlan[C, S]) error {
	child := p.child.DeepCopyObject().(C)
	r.stamp(child, grid, p)
	*r.k.childSpec(child) = *p.spec
	if err := r.client.Update(ctx, child); err != nil {
		return fmt.Errorf("update %s %s: %w", r.k.kind, p.name, err)
	}
	log.FromContext(ctx).Info("updated unit copy", "grid", grid.GetName(), "unit", p.value, "child", p.name)
	p.child = child
	return nil
}

func (r *workloadGridReconciler[G, C, S]) updatedAt(c C) time.Time {
	t, err := time.Parse(time.RFC3339, c.GetAnnotations()[gridv1.AnnotationUpdatedAt])
	if err != nil {
		return c.GetCreationTimestamp().Time
	}
	return t
}

func maxUnavailable(v *intstr.IntOrString, units int) int {
	if v == nil {
		return 1
	}
	n, err := intstr.GetScaledValueFromIntOrPercent(v, units, false)
	if err != nil || n < 1 {
		return 1
	}
	return n
}

func unitNames[C client.Object, S any](plans []*unitPlan[C, S]) []string {
	names := make([]string, 0, len(plans))
	for _, p := range plans {
		names = append(names, p.value)
	}
	return names
}

// removeVanished deletes the children of unit values no node carries any
// more, once the grace period has passed since they went; a label that
// flaps back in time keeps its child.
func (r *workloadGridReconciler[G, C, S]) removeVanished(ctx context.Context, grid G, values map[string]bool, byValue map[string]C) (time.Duration, error) {
	var requeue time.Duration
	for value, child := range byValue {
		gone, marked := child.GetAnnotations()[gridv1.AnnotationUnitGoneSince]
		if values[value] {
			if marked {
				c := child.DeepCopyObject().(C)
				patch := client.MergeFrom(child)
				a := c.GetAnnotations()
				delete(a, gridv1.AnnotationUnitGoneSince)
				c.SetAnnotations(a)
				if err := r.client.Patch(ctx, c, patch); client.IgnoreNotFound(err) != nil {
					return 0, err
				}
			}
			continue
		}
		if !marked {
			c := child.DeepCopyObject().(C)
			patch := client.MergeFrom(child)
			a := c.GetAnnotations()
			if a == nil {
				a = map[string]string{}
			}
			a[gridv1.AnnotationUnitGoneSince] = r.clock.Now().UTC().Format(time.RFC3339)
			c.SetAnnotations(a)
			if err := r.client.Patch(ctx, c, patch); client.IgnoreNotFound(err) != nil {
				return 0, err
			}
			if requeue == 0 || r.grace < requeue {
				requeue = r.grace + time.Second
			}
			continue
		}
		since, err := time.Parse(time.RFC3339, gone)
		if err != nil {
			since = r.clock.Now()
		}
		if left := r.grace - r.clock.Since(since); left > 0 {
			if requeue == 0 || left < requeue {
				requeue = left + time.Second
			}
			continue
		}
		if err := r.client.Delete(ctx, child, client.Preconditions{UID: ptrTo(child.GetUID())}); client.IgnoreNotFound(err) != nil {
			return 0, err
		}
		log.FromContext(ctx).Info("removed the copy of a vanished unit", "grid", grid.GetName(), "unit", value, "gone since", gone)
		r.recorder.Eventf(grid, child, corev1.EventTypeNormal, "UnitRemoved", "Delete", "unit %s has had no node since %s; removed %s %s", value, gone, r.k.kind, child.GetName())
	}
	return requeue, nil
}

func ptrTo[T any](v T) *T { return &v }

func setValid(st gridStatus, invalid []string, gen int64) {
	cond := metav1.Condition{Type: gridv1.ConditionValid, Status: metav1.ConditionTrue, Reason: gridv1.ReasonValid, Message: "every unit's copy can be made", ObservedGeneration: gen}
	if len(invalid) > 0 {
		cond.Status, cond.Reason = metav1.ConditionFalse, gridv1.ReasonInvalidOverride
		cond.Message = strings.Join(invalid[:min(len(invalid), 5)], "; ")
		if len(invalid) > 5 {
			cond.Message += fmt.Sprintf("; and %d more", len(invalid)-5)
		}
	}
	meta.SetStatusCondition(st.conditions, cond)
}

func setConflict(st gridStatus, names []string, kind string, gen int64) {
	cond := metav1.Condition{Type: gridv1.ConditionConflict, Status: metav1.ConditionFalse, Reason: gridv1.ReasonNoConflict, Message: "every child name is free or the grid's own", ObservedGeneration: gen}
	if len(names) > 0 {
		cond.Status, cond.Reason = metav1.ConditionTrue, gridv1.ReasonNameTaken
		cond.Message = fmt.Sprintf("%s %s exist and do not belong to this grid; they are left alone", kind, strings.Join(names, ", "))
	}
	meta.SetStatusCondition(st.conditions, cond)
}

func (r *workloadGridReconciler[G, C, S]) setStatus(grid G, st gridStatus, live map[string]C, plans []*unitPlan[C, S]) {
	r.k.setStates(grid, live)
	current := map[string]string{}
	for _, p := range plans {
		current[p.value] = p.hash
	}
	var ready, updatedUnits int32
	var unavailable []string
	for v, c := range live {
		upToDate := c.GetAnnotations()[gridv1.AnnotationTemplateHash] == current[v]
		if upToDate {
			updatedUnits++
		}
		if r.k.available(c) {
			ready++
		} else {
			unavailable = append(unavailable, v)
		}
	}
	sort.Strings(unavailable)
	*st.counts = gridv1.GridUnitCounts{Units: int32(len(live)), ReadyUnits: ready, UpdatedUnits: updatedUnits}
	gen := grid.GetGeneration()
	cond := metav1.Condition{Type: gridv1.ConditionAvailable, ObservedGeneration: gen}
	switch {
	case len(live) == 0:
		cond.Status, cond.Reason, cond.Message = metav1.ConditionFalse, gridv1.ReasonNoUnits, "no node carries the gridUniqKey label"
	case len(unavailable) > 0:
		cond.Status, cond.Reason = metav1.ConditionFalse, gridv1.ReasonUnitsUnavailable
		cond.Message = fmt.Sprintf("%d of %d units not Available: %s", len(unavailable), len(live), strings.Join(unavailable[:min(len(unavailable), 10)], ", "))
	default:
		cond.Status, cond.Reason, cond.Message = metav1.ConditionTrue, gridv1.ReasonAllUnitsAvailable, fmt.Sprintf("all %d units Available", len(live))
	}
	meta.SetStatusCondition(st.conditions, cond)
	*st.observedGeneration = gen
}

// setup registers a grid controller: it reconciles on grid changes, child
// changes, node label changes of the grid's key, and NodeUnit label changes
// (for unitSelector overrides).
func (r *workloadGridReconciler[G, C, S]) setup(mgr ctrl.Manager, name string, listGrids func(ctx context.Context, c client.Client) ([]G, error)) error {
	c := mgr.GetClient()
	gridsFor := func(match func(G) bool) func(ctx context.Context, q workqueueOfRequests) {
		return func(ctx context.Context, q workqueueOfRequests) {
			grids, err := listGrids(ctx, c)
			if err != nil {
				log.FromContext(ctx).Error(err, "list grids")
				return
			}
			for _, g := range grids {
				if match(g) {
					q.Add(reconcile.Request{NamespacedName: types.NamespacedName{Namespace: g.GetNamespace(), Name: g.GetName()}})
				}
			}
		}
	}
	byKey := func(keys map[string]bool) func(ctx context.Context, q workqueueOfRequests) {
		return gridsFor(func(g G) bool { return keys[r.k.spec(g).uniqKey] })
	}
	nodeHandler := handler.Funcs{
		CreateFunc: func(ctx context.Context, e event.CreateEvent, q workqueueOfRequests) {
			byKey(keySet(e.Object.GetLabels()))(ctx, q)
		},
		UpdateFunc: func(ctx context.Context, e event.UpdateEvent, q workqueueOfRequests) {
			byKey(changedKeys(e.ObjectOld.GetLabels(), e.ObjectNew.GetLabels()))(ctx, q)
		},
		DeleteFunc: func(ctx context.Context, e event.DeleteEvent, q workqueueOfRequests) {
			byKey(keySet(e.Object.GetLabels()))(ctx, q)
		},
	}
	unitHandler := handler.Funcs{
		UpdateFunc: func(ctx context.Context, e event.UpdateEvent, q workqueueOfRequests) {
			if !maps.Equal(e.ObjectOld.GetLabels(), e.ObjectNew.GetLabels()) {
				gridsFor(func(g G) bool { return needsUnitLabels(r.k.spec(g).overrides) })(ctx, q)
			}
		},
		CreateFunc: func(ctx context.Context, e event.CreateEvent, q workqueueOfRequests) {
			gridsFor(func(g G) bool { return needsUnitLabels(r.k.spec(g).overrides) })(ctx, q)
		},
	}
	return ctrl.NewControllerManagedBy(mgr).
		Named(name).
		For(r.k.newGrid(), builder.WithPredicates(predicate.GenerationChangedPredicate{})).
		Owns(r.k.newChild()).
		Watches(&corev1.Node{}, nodeHandler).
		Watches(&sitev1.NodeUnit{}, unitHandler).
		WithOptions(controller.Options{MaxConcurrentReconciles: 8}).
		Complete(r)
}

// workqueueOfRequests is the queue event handlers add requests to.
type workqueueOfRequests = workqueue.TypedRateLimitingInterface[reconcile.Request]

func keySet(l map[string]string) map[string]bool {
	keys := make(map[string]bool, len(l))
	for k := range l {
		keys[k] = true
	}
	return keys
}

// changedKeys are the label keys added, removed or changed.
func changedKeys(old, cur map[string]string) map[string]bool {
	keys := map[string]bool{}
	for k, v := range old {
		if w, ok := cur[k]; !ok || w != v {
			keys[k] = true
		}
	}
	for k := range cur {
		if _, ok := old[k]; !ok {
			keys[k] = true
		}
	}
	return keys
}

// pointers returns pointers to the items of a list.
func pointers[T any](items []T) []*T {
	out := make([]*T, len(items))
	for i := range items {
		out[i] = &items[i]
	}
	return out
}

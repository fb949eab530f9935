package grid

import (
	"context"
	"errors"
	"maps"
	"slices"
	"sort"
	"sync"
	"time"

	"golang.org/x/sync/errgroup"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/equality"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/tools/events"
	"k8s.io/utils/clock"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/log"
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
	// listGrids lists the grids of the kind (the cache's own objects).
	listGrids func(ctx context.Context, c client.Reader, opts ...client.ListOption) ([]G, error)
	spec      func(G) gridSpec[S]
	status    func(G) gridStatus
	setStates func(G, map[string]C)
	access    func(*S) workloadSpec
	childSpec func(C) *S
	copySpec  func(*S) *S
	// statusValue is the grid's whole status, for change detection.
	statusValue func(G) any
	// available reports whether the child runs its current spec, with every
	// replica updated and ready.
	available func(C) bool
}

// workloadGridReconciler reconciles one grid kind.
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

// phase is one step of a reconcile.
type phase[G, C client.Object, S any] struct {
	name string
	run  func(context.Context, *gridScope[G, C, S]) error
}

// Reconcile runs the phases of one grid in order: read the units, plan
// every unit's copy, create the missing ones, roll out changes, remove the
// copies of vanished units. Whatever happens, the status is written last,
// from what the phases got to: a failed phase shows as Synced=False.
func (r *workloadGridReconciler[G, C, S]) Reconcile(ctx context.Context, req reconcile.Request) (_ reconcile.Result, retErr error) {
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
	s := &gridScope[G, C, S]{grid: grid, updated: grid.DeepCopyObject().(G), spec: r.k.spec(grid)}
	defer func() { retErr = errors.Join(retErr, r.writeStatus(ctx, s)) }()
	for _, p := range []phase[G, C, S]{
		{"read units", r.readUnits},
		{"plan", r.planUnits},
		{"create", r.createMissing},
		{"roll out", r.rollOut},
		{"remove vanished units", r.removeVanished},
	} {
		if err := p.run(ctx, s); err != nil {
			s.failedPhase, s.failedErr = p.name, err
			return reconcile.Result{}, err
		}
	}
	return reconcile.Result{RequeueAfter: s.requeue.after()}, nil
}

// readUnits reads the unit values the nodes carry and the grid's children.
func (r *workloadGridReconciler[G, C, S]) readUnits(ctx context.Context, s *gridScope[G, C, S]) error {
	var nodes corev1.NodeList
	if err := r.client.List(ctx, &nodes, client.HasLabels{s.spec.uniqKey}, client.UnsafeDisableDeepCopy); err != nil {
		return err
	}
	values := map[string]bool{}
	for i := range nodes.Items {
		values[nodes.Items[i].Labels[s.spec.uniqKey]] = true
	}
	children, err := r.k.listChildren(ctx, r.client, s.grid.GetNamespace(), s.grid.GetName())
	if err != nil {
		return err
	}
	s.children = map[string]C{}
	for _, c := range children {
		if metav1.IsControlledBy(c, s.grid) {
			s.children[r.unitValueOf(c, s.spec.uniqKey)] = c
		}
	}
	s.values = slices.Sorted(maps.Keys(values))
	return nil
}

// planUnits computes every unit's desired copy. A unit whose copy cannot
// be made is left out and reported; the others go on.
func (r *workloadGridReconciler[G, C, S]) planUnits(ctx context.Context, s *gridScope[G, C, S]) error {
	in := desiredInput[S]{grid: s.grid.GetName(), spec: s.spec, values: s.values, existing: map[string]string{}}
	in.adopted = map[string]bool{}
	for v, c := range s.children {
		in.existing[v] = c.GetName()
		in.adopted[v] = r.keepsSuperEdgeSelector(c)
	}
	uid, gen := s.grid.GetUID(), s.grid.GetGeneration()
	if needsUnitLabels(s.spec.overrides) {
		// Unit labels can change without a new generation: no memo.
		var units sitev1.NodeUnitList
		if err := r.client.List(ctx, &units, client.UnsafeDisableDeepCopy); err != nil {
			return err
		}
		in.unitLabels = make(map[string]map[string]string, len(units.Items))
		for i := range units.Items {
			in.unitLabels[units.Items[i].Name] = units.Items[i].Labels
		}
	} else {
		in.current = func(value string) (string, bool) {
			h, ok := r.hashes.get(uid, gen, value)
			c, has := s.children[value]
			return h, ok && has && c.GetAnnotations()[gridv1.AnnotationTemplateHash] == h
		}
	}
	d := desiredUnits(r.k, in)
	for _, p := range d.plans {
		if p.spec != nil {
			r.hashes.put(uid, gen, p.value, p.hash)
		}
		p.child, p.has = s.children[p.value]
	}
	s.plans, s.failures, s.planned = d.plans, append(s.failures, d.failures...), true
	return nil
}

func needsUnitLabels(overrides []gridv1.Override) bool {
	return slices.ContainsFunc(overrides, func(o gridv1.Override) bool { return o.UnitSelector != nil })
}

// createMissing creates the child of every unit that has none, a few at a
// time. A new unit is not part of a staged rollout: it gets the current
// template at once. An object of the child's name that the grid does not own
// is left alone and reported, and so is a child the apiserver refuses.
func (r *workloadGridReconciler[G, C, S]) createMissing(ctx context.Context, s *gridScope[G, C, S]) error {
	var mu sync.Mutex
	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(parallelWrites)
	for _, p := range s.plans {
		if p.has {
			continue
		}
		g.Go(func() error {
			outcome, err := r.createChild(gctx, s.grid, p)
			mu.Lock()
			defer mu.Unlock()
			switch {
			case err != nil && refused(err):
				r.refusedChild(s, p, err)
				return nil
			case outcome == nameTaken:
				s.fail(p.value, p.name, gridv1.ReasonNameTaken, "unit %s: %s %s exists and does not belong to this grid; it is left alone", p.value, r.k.kind, p.name)
			}
			return err
		})
	}
	err := g.Wait()
	sort.SliceStable(s.failures, func(i, j int) bool { return s.failures[i].value < s.failures[j].value })
	s.created = err == nil
	return err
}

// refusedChild reports a unit whose child the apiserver refuses. Refusals
// by policy (Forbidden: quota, admission) may lift: looked at again in a
// minute.
func (r *workloadGridReconciler[G, C, S]) refusedChild(s *gridScope[G, C, S], p *unitPlan[C, S], err error) {
	s.fail(p.value, p.name, gridv1.ReasonChildRefused, "unit %s: the apiserver refused %s %s: %s", p.value, r.k.kind, p.name, apiMessage(err))
	if apierrors.IsForbidden(err) {
		s.requeue.in(time.Minute)
	}
}

// rollOut updates the outdated children planRollout picks.
func (r *workloadGridReconciler[G, C, S]) rollOut(ctx context.Context, s *gridScope[G, C, S]) error {
	var units []rolloutUnit
	byValue := map[string]*unitPlan[C, S]{}
	for _, p := range s.plans {
		if p.has {
			units = append(units, rolloutUnit{value: p.value, outdated: p.child.GetAnnotations()[gridv1.AnnotationTemplateHash] != p.hash,
				available: r.k.available(p.child), updatedAt: updatedAt(p.child)})
			byValue[p.value] = p
		}
	}
	d := planRollout(units, len(s.plans), s.spec.rollout, r.clock)
	s.rollout = &d
	s.requeue.in(d.requeue.after())
	for _, v := range d.update {
		if err := r.updateChild(ctx, s.grid, byValue[v]); err != nil {
			if !refused(err) {
				return err
			}
			r.refusedChild(s, byValue[v], err)
		}
	}
	return nil
}

// removeVanished marks the children of units no node carries any more,
// unmarks those whose unit came back, and deletes those planVanished finds
// past the grace period.
func (r *workloadGridReconciler[G, C, S]) removeVanished(ctx context.Context, s *gridScope[G, C, S]) error {
	var children []unitChild
	for _, v := range slices.Sorted(maps.Keys(s.children)) {
		gone, marked := s.children[v].GetAnnotations()[gridv1.AnnotationUnitGoneSince]
		children = append(children, unitChild{value: v, goneSince: gone, marked: marked})
	}
	d := planVanished(children, s.values, r.grace, r.clock)
	s.requeue.in(d.requeue.after())
	for _, v := range d.unmark {
		if err := r.markGone(ctx, s.children[v], ""); err != nil {
			return err
		}
	}
	for _, v := range d.mark {
		if err := r.markGone(ctx, s.children[v], r.clock.Now().UTC().Format(time.RFC3339)); err != nil {
			return err
		}
	}
	for _, v := range d.remove {
		child := s.children[v]
		if err := r.client.Delete(ctx, child, client.Preconditions{UID: ptrTo(child.GetUID())}); client.IgnoreNotFound(err) != nil {
			return err
		}
		gone := child.GetAnnotations()[gridv1.AnnotationUnitGoneSince]
		log.FromContext(ctx).Info("removed the copy of a vanished unit", "grid", s.grid.GetName(), "unit", v, "gone since", gone)
		r.recorder.Eventf(s.grid, child, corev1.EventTypeNormal, "UnitRemoved", "Delete", "unit %s has had no node since %s; removed %s %s", v, gone, r.k.kind, child.GetName())
	}
	return nil
}

// writeStatus fills in the grid's status from the scope and writes it when
// it changed.
func (r *workloadGridReconciler[G, C, S]) writeStatus(ctx context.Context, s *gridScope[G, C, S]) error {
	r.setStatus(s)
	if equality.Semantic.DeepEqual(r.k.statusValue(s.grid), r.k.statusValue(s.updated)) {
		return nil
	}
	return client.IgnoreNotFound(r.client.Status().Patch(ctx, s.updated, client.MergeFrom(s.grid)))
}

// pointers returns pointers to the items of a list.
func pointers[T any](items []T) []*T {
	out := make([]*T, len(items))
	for i := range items {
		out[i] = &items[i]
	}
	return out
}

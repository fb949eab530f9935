package grid

import (
	"context"
	"errors"
	"fmt"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/validation"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/controller/controllerutil"
	"sigs.k8s.io/controller-runtime/pkg/log"

	gridv1 "github.com/sitegrid/sitegrid/api/superedge/v1"
)

// The writes of a grid's children: create, update, and the vanished-unit
// mark.

// parallelWrites bounds the child writes one reconcile makes at once.
const parallelWrites = 4

// refused tells a write the apiserver will refuse again, whatever the
// retry (the object is invalid or not allowed), from a failure worth a
// retry.
func refused(err error) bool {
	return apierrors.IsInvalid(err) || apierrors.IsBadRequest(err) || apierrors.IsForbidden(err) || apierrors.IsRequestEntityTooLargeError(err)
}

// apiMessage is the apiserver's message in err.
func apiMessage(err error) string {
	var st apierrors.APIStatus
	if errors.As(err, &st) {
		return st.Status().Message
	}
	return err.Error()
}

// createOutcome is what became of a create.
type createOutcome int

const (
	created createOutcome = iota
	// nameTaken: an object of the child's name belongs to someone else.
	nameTaken
)

// createChild creates a unit's child. The manager caches only objects that
// carry the grid label, so a name taken by someone else shows up as
// AlreadyExists, and is confirmed with a read from the apiserver.
func (r *workloadGridReconciler[G, C, S]) createChild(ctx context.Context, grid G, p *unitPlan[C, S]) (createOutcome, error) {
	child := r.k.newChild()
	child.SetNamespace(grid.GetNamespace())
	child.SetName(p.name)
	r.stamp(child, grid, p)
	*r.k.childSpec(child) = *p.spec
	if err := controllerutil.SetControllerReference(grid, child, r.client.Scheme()); err != nil {
		return created, err
	}
	if err := r.client.Create(ctx, child); err != nil {
		if !apierrors.IsAlreadyExists(err) {
			return created, fmt.Errorf("create %s %s: %w", r.k.kind, p.name, err)
		}
		existing := r.k.newChild()
		if err := r.apiReader.Get(ctx, types.NamespacedName{Namespace: grid.GetNamespace(), Name: p.name}, existing); err != nil {
			return created, client.IgnoreNotFound(err)
		}
		if !metav1.IsControlledBy(existing, grid) {
			return nameTaken, nil
		}
		if existing.GetLabels()[gridv1.LabelGridSelector] == grid.GetName() {
			return created, nil // ours, just created: seen on the next pass
		}
		// Ours, but someone removed its grid labels, so the cache lost it:
		// labelled again, it is back in view (its spec is left to the
		// rollout, like any copy's).
		r.label(existing, grid, p)
		if err := r.client.Update(ctx, existing); err != nil {
			return created, fmt.Errorf("re-label %s %s: %w", r.k.kind, p.name, err)
		}
		log.FromContext(ctx).Info("re-labelled a unit copy whose grid labels were removed", "grid", grid.GetName(), "unit", p.value, "child", p.name)
		p.child, p.has = existing, true
		return created, nil
	}
	log.FromContext(ctx).V(1).Info("created unit copy", "grid", grid.GetName(), "unit", p.value, "child", p.name)
	p.child, p.has = child, true
	return created, nil
}

// updateChild writes a unit's desired spec into its child.
func (r *workloadGridReconciler[G, C, S]) updateChild(ctx context.Context, grid G, p *unitPlan[C, S]) error {
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

// label sets the labels that tie a child to grid and unit (and put it in
// the manager's cache). A gridUniqKey that is not a valid label value (one
// with a prefix) goes into an annotation instead.
func (r *workloadGridReconciler[G, C, S]) label(child C, grid G, p *unitPlan[C, S]) {
	l := withGridLabels(child.GetLabels(), grid.GetName(), r.k.spec(grid).uniqKey)
	l[gridv1.LabelGridUnit] = p.value
	child.SetLabels(l)
	if key := r.k.spec(grid).uniqKey; len(validation.IsValidLabelValue(key)) > 0 {
		child.SetAnnotations(with(child.GetAnnotations(), gridv1.AnnotationGridUniqKey, key))
	}
}

// withGridLabels adds the grid labels to l: the grid, and its key when
// that is a valid label value.
func withGridLabels(l map[string]string, grid, key string) map[string]string {
	l = with(l, gridv1.LabelGridSelector, grid)
	if len(validation.IsValidLabelValue(key)) == 0 {
		l[gridv1.LabelGridUniqKey] = key
	}
	return l
}

// with sets m[k] = v, making m if it is nil.
func with(m map[string]string, k, v string) map[string]string {
	if m == nil {
		m = map[string]string{}
	}
	m[k] = v
	return m
}

// stamp sets the labels and annotations that tie a child to grid and unit.
func (r *workloadGridReconciler[G, C, S]) stamp(child C, grid G, p *unitPlan[C, S]) {
	r.label(child, grid, p)
	a := with(child.GetAnnotations(), gridv1.AnnotationTemplateHash, p.hash)
	a[gridv1.AnnotationUpdatedAt] = r.clock.Now().UTC().Format(time.RFC3339)
	delete(a, gridv1.AnnotationUnitGoneSince)
	child.SetAnnotations(a)
}

// updatedAt is when a child's template was last changed.
func updatedAt(c client.Object) time.Time {
	t, err := time.Parse(time.RFC3339, c.GetAnnotations()[gridv1.AnnotationUpdatedAt])
	if err != nil {
		return c.GetCreationTimestamp().Time
	}
	return t
}

// markGone sets (now) or, with now empty, removes a child's vanished-unit
// mark.
func (r *workloadGridReconciler[G, C, S]) markGone(ctx context.Context, child C, now string) error {
	c := child.DeepCopyObject().(C)
	patch := client.MergeFrom(child)
	a := with(c.GetAnnotations(), gridv1.AnnotationUnitGoneSince, now)
	if now == "" {
		delete(a, gridv1.AnnotationUnitGoneSince)
	}
	c.SetAnnotations(a)
	return client.IgnoreNotFound(r.client.Patch(ctx, c, patch))
}

func ptrTo[T any](v T) *T { return &v }

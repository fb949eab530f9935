package grid

import (
	gridv1 "github.com/sitegrid/sitegrid/api/superedge/v1"
)

// Children SuperEdge's application-grid-controller made are adopted as
// they are: same object, same pods. Such a child is named and owned as
// sitegrid's are, but carries no grid-unit label and its selector and pod
// labels do not name the unit (SuperEdge pinned copies by node selector
// alone). A selector is immutable and new pod labels would replace every
// pod, so an adopted child keeps both; sitegrid pins it, as SuperEdge did,
// by the node selector only, and rolls template changes out to it as to
// any child.

// unitValueOf is the unit value a child of the grid serves: its grid-unit
// label, or, on a child SuperEdge made, the gridUniqKey value of its pods'
// node selector.
func (r *workloadGridReconciler[G, C, S]) unitValueOf(c C, key string) string {
	if v, ok := c.GetLabels()[gridv1.LabelGridUnit]; ok {
		return v
	}
	return r.k.access(r.k.childSpec(c)).podTemplate().Spec.NodeSelector[key]
}

// keepsSuperEdgeSelector reports whether a child's selector does not name
// its unit: SuperEdge made it.
func (r *workloadGridReconciler[G, C, S]) keepsSuperEdgeSelector(c C) bool {
	sel := *r.k.access(r.k.childSpec(c)).selector()
	return sel == nil || sel.MatchLabels[gridv1.LabelGridUnit] == ""
}

// pinByNodeSelector is pinToUnit for an adopted child: the unit's node
// selector, and the template's own selector and pod labels.
func pinByNodeSelector(ws workloadSpec, key, value string) {
	pod := ws.podTemplate()
	if pod.Spec.NodeSelector == nil {
		pod.Spec.NodeSelector = map[string]string{}
	}
	pod.Spec.NodeSelector[key] = value
}

package v1

import (
	appsv1 "k8s.io/api/apps/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// StatefulSetGridSpec describes the Deployment each unit gets.
// +kubebuilder:validation:XValidation:rule="!has(self.templates) || (has(self.templatePool) && self.templates.all(u, self.templates[u] in self.templatePool))",message="every spec.templates entry must name a template in spec.templatePool"
// +kubebuilder:validation:XValidation:rule="!has(self.defaultTemplateName) || self.defaultTemplateName == 'default' || (has(self.templatePool) && self.defaultTemplateName in self.templatePool)",message="spec.defaultTemplateName must be 'default' (spec.template) or a template in spec.templatePool"
// +kubebuilder:validation:XValidation:rule="has(self.template) || (has(self.defaultTemplateName) && self.defaultTemplateName != 'default')",message="spec.template is required unless spec.defaultTemplateName names a template in spec.templatePool"
// +kubebuilder:validation:XValidation:rule="!has(self.template) || !has(self.template.replicas) || self.template.replicas >= 0",message="spec.template.replicas must not be negative"
// +kubebuilder:validation:XValidation:rule="!has(self.templatePool) || self.templatePool.all(t, !has(self.templatePool[t].replicas) || self.templatePool[t].replicas >= 0)",message="the replicas of a spec.templatePool entry must not be negative"
// +kubebuilder:validation:XValidation:rule="!has(self.template) || !has(self.template.template.spec) || !has(self.template.template.spec.nodeName)",message="spec.template must not set nodeName: every copy would run on that one node, outside its unit"
// +kubebuilder:validation:XValidation:rule="!has(self.templatePool) || self.templatePool.all(t, !has(self.templatePool[t].template.spec) || !has(self.templatePool[t].template.spec.nodeName))",message="a spec.templatePool entry must not set nodeName: every copy would run on that one node, outside its unit"
// +kubebuilder:validation:XValidation:rule="!has(self.overrides) || self.overrides.all(o, !has(o.nodeSelector) || !(self.gridUniqKey in o.nodeSelector))",message="an override's nodeSelector must not set gridUniqKey: that label pins each copy to its unit"
type StatefulSetGridSpec struct {
	// gridUniqKey is the node label key whose values are the units; with a
	// NodeGroup, its name.
	// +required
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=317
	// +kubebuilder:validation:Pattern=`^([a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*/)?[A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?$`
	// +kubebuilder:validation:XValidation:rule="self.indexOf('/') <= 253",message="the prefix of gridUniqKey (before the /) must be at most 253 characters, as in any label key"
	GridUniqKey string `json:"gridUniqKey"`

	// template is the StatefulSet of every unit, unless templates or
	// defaultTemplateName choose one from templatePool.
	// +optional
	Template *appsv1.StatefulSetSpec `json:"template,omitempty"`

	// templatePool holds named StatefulSet specs.
	// +optional
	// +kubebuilder:validation:MaxProperties=64
	TemplatePool map[string]appsv1.StatefulSetSpec `json:"templatePool,omitempty"`

	// templates maps unit values to names in templatePool.
	// +optional
	// +kubebuilder:validation:MaxProperties=1000
	Templates map[string]string `json:"templates,omitempty"`

	// defaultTemplateName is the template of units that templates does not
	// name: "default" (spec.template) or a name in templatePool.
	// +optional
	// +kubebuilder:default=default
	// +kubebuilder:validation:MaxLength=253
	DefaultTemplateName string `json:"defaultTemplateName,omitempty"`

	// autoDeleteUnusedTemplate removes templatePool entries that no unit
	// uses from the children's bookkeeping (SuperEdge compatibility; the
	// grid's own spec is never written).
	// +optional
	AutoDeleteUnusedTemplate bool `json:"autoDeleteUnusedTemplate,omitempty"`

	// overrides change the copies of some units.
	// +optional
	// +listType=atomic
	// +kubebuilder:validation:MaxItems=64
	Overrides []Override `json:"overrides,omitempty"`

	// rolloutStrategy stages template changes across units; without it,
	// every unit is updated at once.
	// +optional
	RolloutStrategy *RolloutStrategy `json:"rolloutStrategy,omitempty"`
}

// StatefulSetGridStatus is the observed state of a StatefulSetGrid.
type StatefulSetGridStatus struct {
	// states is each unit's StatefulSet status, keyed by unit value.
	// +optional
	States map[string]StatefulSetUnitState `json:"states,omitempty"`

	GridUnitCounts `json:",inline"`

	// +optional
	ObservedGeneration int64 `json:"observedGeneration,omitempty"`

	// conditions: Available, RolloutProgressing, Conflict, Valid, Synced.
	// +optional
	// +listType=map
	// +listMapKey=type
	Conditions []metav1.Condition `json:"conditions,omitempty"`
}

// StatefulSetUnitState is the status of one unit's StatefulSet, in the
// shape of apps/v1 StatefulSetStatus.
type StatefulSetUnitState struct {
	// +optional
	ObservedGeneration int64 `json:"observedGeneration,omitempty"`
	// +optional
	Replicas int32 `json:"replicas,omitempty"`
	// +optional
	ReadyReplicas int32 `json:"readyReplicas,omitempty"`
	// +optional
	CurrentReplicas int32 `json:"currentReplicas,omitempty"`
	// +optional
	UpdatedReplicas int32 `json:"updatedReplicas,omitempty"`
	// +optional
	AvailableReplicas int32 `json:"availableReplicas,omitempty"`
	// +optional
	CurrentRevision string `json:"currentRevision,omitempty"`
	// +optional
	UpdateRevision string `json:"updateRevision,omitempty"`
	// +optional
	// +listType=atomic
	Conditions []appsv1.StatefulSetCondition `json:"conditions,omitempty"`
}

// StatefulSetGrid runs one StatefulSet in every unit.
// +kubebuilder:object:root=true
// +kubebuilder:subresource:status
// +kubebuilder:resource:shortName=ssg,categories=sitegrid
// +kubebuilder:printcolumn:name="Units",type=integer,JSONPath=`.status.units`
// +kubebuilder:printcolumn:name="Ready",type=integer,JSONPath=`.status.readyUnits`
// +kubebuilder:printcolumn:name="Updated",type=integer,JSONPath=`.status.updatedUnits`
// +kubebuilder:printcolumn:name="Age",type=date,JSONPath=`.metadata.creationTimestamp`
type StatefulSetGrid struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata,omitempty"`

	// +required
	Spec StatefulSetGridSpec `json:"spec"`
	// +optional
	Status StatefulSetGridStatus `json:"status,omitempty"`
}

// StatefulSetGridList is a list of StatefulSetGrids.
// +kubebuilder:object:root=true
type StatefulSetGridList struct {
	metav1.TypeMeta `json:",inline"`
	metav1.ListMeta `json:"metadata,omitempty"`
	Items           []StatefulSetGrid `json:"items"`
}

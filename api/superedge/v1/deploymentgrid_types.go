package v1

import (
	appsv1 "k8s.io/api/apps/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// DeploymentGridSpec describes the Deployment each unit gets.
// +kubebuilder:validation:XValidation:rule="!has(self.templates) || (has(self.templatePool) && self.templates.all(u, self.templates[u] in self.templatePool))",message="every spec.templates entry must name a template in spec.templatePool"
// +kubebuilder:validation:XValidation:rule="!has(self.defaultTemplateName) || self.defaultTemplateName == 'default' || (has(self.templatePool) && self.defaultTemplateName in self.templatePool)",message="spec.defaultTemplateName must be 'default' (spec.template) or a template in spec.templatePool"
// +kubebuilder:validation:XValidation:rule="has(self.template) || (has(self.defaultTemplateName) && self.defaultTemplateName != 'default')",message="spec.template is required unless spec.defaultTemplateName names a template in spec.templatePool"
// +kubebuilder:validation:XValidation:rule="!has(self.template) || !has(self.template.replicas) || self.template.replicas >= 0",message="spec.template.replicas must not be negative"
// +kubebuilder:validation:XValidation:rule="!has(self.templatePool) || self.templatePool.all(t, !has(self.templatePool[t].replicas) || self.templatePool[t].replicas >= 0)",message="the replicas of a spec.templatePool entry must not be negative"
// +kubebuilder:validation:XValidation:rule="!has(self.template) || !has(self.template.template.spec) || !has(self.template.template.spec.nodeName)",message="spec.template must not set nodeName: every copy would run on that one node, outside its unit"
// +kubebuilder:validation:XValidation:rule="!has(self.templatePool) || self.templatePool.all(t, !has(self.templatePool[t].template.spec) || !has(self.templatePool[t].template.spec.nodeName))",message="a spec.templatePool entry must not set nodeName: every copy would run on that one node, outside its unit"
// +kubebuilder:validation:XValidation:rule="!has(self.overrides) || self.overrides.all(o, !has(o.nodeSelector) || !(self.gridUniqKey in o.nodeSelector))",message="an override's nodeSelector must not set gridUniqKey: that label pins each copy to its unit"
type DeploymentGridSpec struct {
	// gridUniqKey is the node label key whose values are the units; with a
	// NodeGroup, its name.
	// +required
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=317
	// +kubebuilder:validation:Pattern=`^([a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*/)?[A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?$`
	// +kubebuilder:validation:XValidation:rule="self.indexOf('/') <= 253",message="the prefix of gridUniqKey (before the /) must be at most 253 characters, as in any label key"
	GridUniqKey string `json:"gridUniqKey"`

	// template is the Deployment of every unit, unless templates or
	// defaultTemplateName choose one from templatePool.
	// +optional
	Template *appsv1.DeploymentSpec `json:"template,omitempty"`

	// templatePool holds named Deployment specs.
	// +optional
	// +kubebuilder:validation:MaxProperties=64
	TemplatePool map[string]appsv1.DeploymentSpec `json:"templatePool,omitempty"`

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

// DeploymentGridStatus is the observed state of a DeploymentGrid.
type DeploymentGridStatus struct {
	// states is each unit's Deployment status, keyed by unit value.
	// +optional
	States map[string]DeploymentUnitState `json:"states,omitempty"`

	GridUnitCounts `json:",inline"`

	// +optional
	ObservedGeneration int64 `json:"observedGeneration,omitempty"`

	// conditions: Available, RolloutProgressing, Conflict, Valid, Synced.
	// +optional
	// +listType=map
	// +listMapKey=type
	Conditions []metav1.Condition `json:"conditions,omitempty"`
}

// DeploymentUnitState is the status of one unit's Deployment, in the shape
// of apps/v1 DeploymentStatus.
type DeploymentUnitState struct {
	// +optional
	ObservedGeneration int64 `json:"observedGeneration,omitempty"`
	// +optional
	Replicas int32 `json:"replicas,omitempty"`
	// +optional
	UpdatedReplicas int32 `json:"updatedReplicas,omitempty"`
	// +optional
	ReadyReplicas int32 `json:"readyReplicas,omitempty"`
	// +optional
	AvailableReplicas int32 `json:"availableReplicas,omitempty"`
	// +optional
	UnavailableReplicas int32 `json:"unavailableReplicas,omitempty"`
	// +optional
	// +listType=atomic
	Conditions []appsv1.DeploymentCondition `json:"conditions,omitempty"`
}

// DeploymentGrid runs one Deployment in every unit.
// +kubebuilder:object:root=true
// +kubebuilder:subresource:status
// +kubebuilder:resource:shortName=dg,categories=sitegrid
// +kubebuilder:printcolumn:name="Units",type=integer,JSONPath=`.status.units`
// +kubebuilder:printcolumn:name="Ready",type=integer,JSONPath=`.status.readyUnits`
// +kubebuilder:printcolumn:name="Updated",type=integer,JSONPath=`.status.updatedUnits`
// +kubebuilder:printcolumn:name="Age",type=date,JSONPath=`.metadata.creationTimestamp`
type DeploymentGrid struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata,omitempty"`

	// +required
	Spec DeploymentGridSpec `json:"spec"`
	// +optional
	Status DeploymentGridStatus `json:"status,omitempty"`
}

// DeploymentGridList is a list of DeploymentGrids.
// +kubebuilder:object:root=true
type DeploymentGridList struct {
	metav1.TypeMeta `json:",inline"`
	metav1.ListMeta `json:"metadata,omitempty"`
	Items           []DeploymentGrid `json:"items"`
}

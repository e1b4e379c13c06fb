{{- define "agentic-obs.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "agentic-obs.fullname" -}}
{{- if .Values.fullnameOverride -}}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- $name := default .Chart.Name .Values.nameOverride -}}
{{- if contains $name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{- define "agentic-obs.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "agentic-obs.selectorLabels" -}}
app.kubernetes.io/name: {{ include "agentic-obs.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{- define "agentic-obs.labels" -}}
helm.sh/chart: {{ include "agentic-obs.chart" . }}
{{ include "agentic-obs.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end -}}

{{- define "agentic-obs.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- default (include "agentic-obs.fullname" .) .Values.serviceAccount.name -}}
{{- else -}}
{{- default "default" .Values.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{- define "agentic-obs.secretName" -}}
{{- default (include "agentic-obs.fullname" .) .Values.secrets.existingSecret -}}
{{- end -}}

{{- /*
Scale-out (issue 17). The storage backend the service will use: config.storage.backend, else postgres
when the chart makes a CloudNativePG cluster, else the service's default (sqlite).
*/ -}}
{{- define "agentic-obs.storageBackend" -}}
{{- $storage := .Values.config.storage | default dict -}}
{{- if $storage.backend -}}
{{- $storage.backend -}}
{{- else if .Values.postgresql.cloudnativepg.enabled -}}
postgres
{{- else -}}
sqlite
{{- end -}}
{{- end -}}

{{- /* The CloudNativePG Cluster's name; the operator adds the -rw/-ro/-r Services and the -app Secret. */ -}}
{{- define "agentic-obs.cnpgName" -}}
{{- default (printf "%s-pg" .Release.Name) .Values.postgresql.cloudnativepg.name | trunc 50 | trimSuffix "-" -}}
{{- end -}}

{{- /* storage.postgres.url as set, else (CloudNativePG) the cluster's read-write Service. Never a password. */ -}}
{{- define "agentic-obs.postgresUrl" -}}
{{- $postgres := (.Values.config.storage | default dict).postgres | default dict -}}
{{- if $postgres.url -}}
{{- $postgres.url -}}
{{- else if .Values.postgresql.cloudnativepg.enabled -}}
{{- printf "postgresql://agentic@%s-rw:5432/agentic" (include "agentic-obs.cnpgName" .) -}}
{{- end -}}
{{- end -}}

{{- /* "true" when the embedded incident memory (Qdrant Edge, on the pod's disk) is in use. */ -}}
{{- define "agentic-obs.edgeMemory" -}}
{{- $memory := .Values.config.memory | default dict -}}
{{- if and (or (not (hasKey $memory "enabled")) $memory.enabled) (eq (toString ($memory.backend | default "edge")) "edge") -}}
true
{{- end -}}
{{- end -}}

{{- /*
"true" when the state directory (storage.path) is the PersistentVolumeClaim: it holds what one pod
owns, the SQLite file or the Qdrant Edge shard. With postgres and a Qdrant server it is an emptyDir
(only actions.jsonl is left there) and pods roll one after the other.
*/ -}}
{{- define "agentic-obs.stateOnClaim" -}}
{{- if and .Values.persistence.enabled (or (eq (include "agentic-obs.storageBackend" .) "sqlite") (include "agentic-obs.edgeMemory" .)) -}}
true
{{- end -}}
{{- end -}}

{{- /* A flag that is on when replicaCount > 1 unless set to true or false. */ -}}
{{- define "agentic-obs.onWithReplicas" -}}
{{- $flag := index . 0 -}}
{{- if kindIs "bool" $flag -}}
{{- if $flag }}true{{ end -}}
{{- else if gt (int (index . 1)) 1 -}}
true
{{- end -}}
{{- end -}}

{{- /* Values that cannot work together fail the render, saying what to set. */ -}}
{{- define "agentic-obs.validate" -}}
{{- $replicas := int .Values.replicaCount -}}
{{- $backend := include "agentic-obs.storageBackend" . -}}
{{- $cnpg := .Values.postgresql.cloudnativepg.enabled -}}
{{- if not (has $backend (list "sqlite" "postgres")) -}}
{{- fail (printf "config.storage.backend is %q: it is sqlite or postgres" $backend) -}}
{{- end -}}
{{- if and (gt $replicas 1) (ne $backend "postgres") -}}
{{- fail (printf "replicaCount is %d but config.storage.backend is %s, whose file takes one writer: set config.storage.backend: postgres with config.storage.postgres.url (password in POSTGRES_PASSWORD: secrets.values or postgresql.existingSecret), or postgresql.cloudnativepg.enabled: true; or set replicaCount: 1" $replicas $backend) -}}
{{- end -}}
{{- if and (gt $replicas 1) (include "agentic-obs.edgeMemory" .) -}}
{{- fail (printf "replicaCount is %d but config.memory.backend is edge (Qdrant Edge on each pod's disk: every pod would recall only its own incidents): set config.memory.backend: qdrant with config.memory.url (a Qdrant server; QDRANT_API_KEY in the secret), or config.memory.enabled: false" $replicas) -}}
{{- end -}}
{{- $url := include "agentic-obs.postgresUrl" . -}}
{{- if and (eq $backend "postgres") (not $url) -}}
{{- fail "config.storage.backend is postgres but config.storage.postgres.url is not set: set it to a libpq URL without a password (postgresql://agentic@db.example:5432/agentic or service=agentic), or set postgresql.cloudnativepg.enabled: true" -}}
{{- end -}}
{{- if or (regexMatch "^postgres(ql)?://[^/?#@]*:[^/?#@]*@" $url) (regexMatch "(?i)(^|[\\s?&])password\\s*=" $url) -}}
{{- fail "config.storage.postgres.url carries a password, which would sit in the ConfigMap: remove it and give the password as POSTGRES_PASSWORD (secrets.values.POSTGRES_PASSWORD or postgresql.existingSecret)" -}}
{{- end -}}
{{- if and $cnpg (ne $backend "postgres") -}}
{{- fail "postgresql.cloudnativepg.enabled is true but config.storage.backend is sqlite: the service would not use the cluster; set config.storage.backend: postgres (or leave it unset)" -}}
{{- end -}}
{{- $sources := list -}}
{{- if and (not .Values.secrets.existingSecret) .Values.secrets.values.POSTGRES_PASSWORD -}}
{{- $sources = append $sources "secrets.values.POSTGRES_PASSWORD" -}}
{{- end -}}
{{- if .Values.postgresql.existingSecret -}}
{{- $sources = append $sources "postgresql.existingSecret" -}}
{{- end -}}
{{- if $cnpg -}}
{{- $sources = append $sources "postgresql.cloudnativepg (its -app Secret)" -}}
{{- end -}}
{{- if gt (len $sources) 1 -}}
{{- fail (printf "POSTGRES_PASSWORD is given by %s: keep one" (join " and " $sources)) -}}
{{- end -}}
{{- end -}}

-- Argo CD health check for kelp's kinds (kelp.imagine-ai.eu/*: Module, Cluster,
-- Deployment). Put it under resource.customizations in argocd-cm, keyed
-- "kelp.imagine-ai.eu/*" (docs/operations.md). It reads the same things kstatus (Flux)
-- reads: observedGeneration, and the Ready, Reconciling and Stalled conditions.
local hs = {}

local function condition(name)
  if obj.status == nil or obj.status.conditions == nil then
    return nil
  end
  for _, c in ipairs(obj.status.conditions) do
    if c.type == name then
      return c
    end
  end
  return nil
end

local function said(c, default)
  if c ~= nil and c.message ~= nil and c.message ~= "" then
    return c.message
  end
  return default
end

if obj.metadata ~= nil and obj.metadata.deletionTimestamp ~= nil then
  hs.status = "Progressing"
  hs.message = "Deleting: kelp removes what it made first"
  return hs
end

if obj.spec ~= nil and obj.spec.paused == true then
  hs.status = "Suspended"
  hs.message = "spec.paused is true: kelp leaves it alone"
  return hs
end

if obj.status == nil then
  hs.status = "Progressing"
  hs.message = "Waiting for kelp to reconcile it"
  return hs
end

if obj.metadata ~= nil and obj.metadata.generation ~= nil
  and obj.status.observedGeneration ~= obj.metadata.generation then
  hs.status = "Progressing"
  hs.message = "Waiting for kelp to observe generation " .. tostring(obj.metadata.generation)
  return hs
end

local ready = condition("Ready")
local stalled = condition("Stalled")

if stalled ~= nil and stalled.status == "True" then
  hs.status = "Degraded"
  hs.message = said(stalled, "Stalled")
  return hs
end

if ready ~= nil and ready.status == "True" then
  hs.status = "Healthy"
  hs.message = said(ready, "Ready")
  return hs
end

-- What a Deployment needs is not there: its Module or Cluster.
if ready ~= nil and ready.reason ~= nil and string.find(ready.reason, "NotFound$") ~= nil then
  hs.status = "Missing"
  hs.message = said(ready, ready.reason)
  return hs
end

if obj.status.phase == "Degraded" or obj.status.phase == "Failed" then
  hs.status = "Degraded"
  hs.message = said(ready, obj.status.phase)
  return hs
end

hs.status = "Progressing"
hs.message = said(condition("Reconciling"), said(ready, "Waiting for kelp"))
return hs

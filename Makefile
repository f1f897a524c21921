# `sam build` (BuildMethod: makefile) calls build-<LogicalId> with
# ARTIFACTS_DIR set; each target packages one function with plain cargo.
# SAM_ARCH must match the template's Architecture (arm64 by default):
#   SAM_ARCH=x86_64 sam build --parameter-overrides Architecture=x86_64
SAM_ARCH ?= arm64

# Each target packages all five in one cargo invocation (the first does the
# work, the others find it done), so every function is built with the same
# features, then takes its own bootstrap.
define function
build-$(1):
	task-images/build-lambdas.sh --arch $(SAM_ARCH)
	cp target/functions/$(2)/bootstrap "$(ARTIFACTS_DIR)/bootstrap"
endef

$(eval $(call function,ConfigApiFunction,config-api))
$(eval $(call function,WorkloadApiFunction,workload-api))
$(eval $(call function,SchedulerFunction,scheduler))
$(eval $(call function,LauncherFunction,launcher))
$(eval $(call function,MonitorFunction,monitor))

.PHONY: lambdas
lambdas:
	task-images/build-lambdas.sh --arch $(SAM_ARCH)

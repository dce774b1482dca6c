# The two commands: `make run` and `make test`. Each sets itself up from nothing but Python
# 3.13 or 3.12: chalice packages for the Lambda runtime of the interpreter that made .venv, and
# Lambda's python3.11 reached its deprecation on 2026-06-30. PYTHON is the first of these that
# runs: on PATH, or one that pyenv has without having selected it (its shim runs the version
# PYENV_VERSION names); or whatever PYTHON=... names.
SUPPORTED_PYTHONS := 3.13 3.12
ifeq ($(origin PYTHON),undefined)
PYTHON := $(shell for v in $(SUPPORTED_PYTHONS); do \
  if python$$v -c '' >/dev/null 2>&1; then echo python$$v; exit; fi; \
  if PYENV_VERSION=$$v python$$v -c '' >/dev/null 2>&1; then echo env PYENV_VERSION=$$v python$$v; exit; fi; \
  done)
endif
PYTHON_VERSION := $(if $(PYTHON),$(shell $(PYTHON) -c 'import sys; print("%d.%d" % sys.version_info[:2])' 2>/dev/null))
VENV := .venv
BIN := $(VENV)/bin
READY := $(VENV)/.ready
export AWS_DEFAULT_REGION ?= us-east-1

.PHONY: run test lint unit bench package deploy check-deploy clean

# The ready marker records the version of the interpreter that made .venv: made by another,
# .venv is made again from scratch.
ifneq ($(PYTHON_VERSION),$(shell cat $(READY) 2>/dev/null))
.PHONY: $(READY)
VENV_OPTIONS := --clear
endif

$(READY): requirements.txt requirements-dev.txt
	@case " $(SUPPORTED_PYTHONS) " in *" $(PYTHON_VERSION) "*) ;; *) \
	  echo "make: needs Python 3.13 or 3.12 (Lambda's python3.11 runtime is deprecated), and" \
	    "PYTHON=$(PYTHON) is $(or $(PYTHON_VERSION),none that runs): install one, or name it" \
	    "with PYTHON=..." >&2; exit 1;; esac
	$(PYTHON) -m venv $(VENV_OPTIONS) $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -r requirements-dev.txt
	echo $(PYTHON_VERSION) > $(READY)

run: $(READY)
	$(BIN)/python -m infra.local

lint: $(READY)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy --strict chalicelib/domain
	$(BIN)/mypy

test: lint package $(READY)
	$(BIN)/pytest

# The prod stage as a SAM template with infra/template.yaml merged in, linted. The merge
# template is YAML, so chalice writes build/sam.yaml. Chalice caches one ~26 MB zip per
# source state in .chalice/deployments (gitignored); keep only the newest. One package serves
# every stage: imported with no REFUNDS_STAGE, the app names its queues for the stack's
# `${Stage}` (chalicelib/settings.py, process_stage).
package: $(READY)
	rm -rf build
	env -u REFUNDS_STAGE $(BIN)/chalice package --stage prod --merge-template infra/template.yaml build/
	ls -t .chalice/deployments/*.zip | tail -n +2 | xargs -r rm -f
	$(BIN)/cfn-lint build/sam.yaml

# make deploy STAGE=prod ARTIFACTS_BUCKET=... [JWKS_URL=... JWT_ISSUER=... JWT_AUDIENCE=...
#   EVIDENCE_ORIGINS=https://a,https://b PARAMETERS="ApiReservedConcurrency=200 ..."]
# (README, "Deploy"): the stack refunds-$(STAGE) from the package, its code uploaded to
# ARTIFACTS_BUCKET. A value left out keeps the stack's (the first deploy needs them all). A
# first deploy that rolled back leaves an empty stack (RetainExceptOnCreate), deleted here
# before it is tried again; a new stack is created with the tables' deletion protection off,
# so that its rollback can delete them, and turned on once it is up.
STACK = refunds-$(STAGE)
AWS = $(BIN)/aws
DEPLOY = $(AWS) cloudformation deploy --template-file build/packaged.yaml \
	--stack-name $(STACK) --capabilities CAPABILITY_IAM CAPABILITY_AUTO_EXPAND \
	--tags project=refunds stage=$(STAGE) --no-fail-on-empty-changeset \
	--parameter-overrides Stage=$(STAGE) $(if $(JWKS_URL),JwksUrl=$(JWKS_URL)) \
	$(if $(JWT_ISSUER),JwtIssuer=$(JWT_ISSUER)) $(if $(JWT_AUDIENCE),JwtAudience=$(JWT_AUDIENCE)) \
	$(if $(EVIDENCE_ORIGINS),EvidenceAllowedOrigins=$(EVIDENCE_ORIGINS)) $(PARAMETERS)

deploy: check-deploy package
	@test "$$($(AWS) apigateway get-account --query cloudwatchRoleArn --output text)" != None \
	  || { echo "make deploy: API Gateway has no CloudWatch Logs role in this account and" \
	    "region, which its access logs need (README, \"Deploy\")" >&2; exit 1; }
	$(AWS) cloudformation package --template-file build/sam.yaml \
	  --s3-bucket $(ARTIFACTS_BUCKET) --s3-prefix $(STACK) --output-template-file build/packaged.yaml
	status=$$($(AWS) cloudformation describe-stacks --stack-name $(STACK) \
	    --query 'Stacks[0].StackStatus' --output text 2>/dev/null || echo NEW); \
	if [ "$$status" = ROLLBACK_COMPLETE ]; then \
	  $(AWS) cloudformation delete-stack --stack-name $(STACK) \
	  && $(AWS) cloudformation wait stack-delete-complete --stack-name $(STACK) || exit 1; \
	  status=NEW; \
	fi; \
	if [ "$$status" = NEW ]; then \
	  $(DEPLOY) TableDeletionProtection=false || exit 1; \
	fi; \
	$(DEPLOY) TableDeletionProtection=true

check-deploy:
	@test -n "$(STAGE)" || { echo "make deploy: name the stage, STAGE=prod" >&2; exit 1; }
	@test -n "$(ARTIFACTS_BUCKET)" \
	  || { echo "make deploy: name the bucket for the code, ARTIFACTS_BUCKET=..." >&2; exit 1; }

bench: $(READY)
	$(BIN)/python -m bench

clean:
	rm -rf $(VENV) build .mypy_cache .ruff_cache .pytest_cache .hypothesis

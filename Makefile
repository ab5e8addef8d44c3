# speechtl — the two front doors are `make adapt LANG=es` and `make test`.
# Every target depends on `setup`, so a fresh machine needs nothing else.

VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.speechtl-setup
RUNS   ?= runs
# LANG is also the locale variable: only a LANG given on the make command line picks the recipe.
ADAPT_LANG := $(if $(filter command line,$(origin LANG)),$(LANG),es)
RECIPE := recipes/$(ADAPT_LANG)$(if $(DOMAIN),-$(DOMAIN)).yaml
OVERRIDES := $(if $(MODEL),model=$(MODEL)) $(if $(STRATEGY),train.strategy=$(STRATEGY)) $(ARGS)
RUN_ENV := env LANG=C.UTF-8 LC_ALL=C.UTF-8

.PHONY: setup system-deps test adapt prepare-asterisk prepare-es-co synth-es prepare-commonvoice prepare-librispeech bench clean

# make adapt LANG=es [DOMAIN=medical] [MODEL=whisper-small] [DATA=/corpora/cv-es] [STRATEGY=lora] [ARGS="k=v ..."]
adapt: setup
	@test -f $(RECIPE) || { echo "no recipe $(RECIPE) (LANG=$(ADAPT_LANG) DOMAIN=$(DOMAIN))"; exit 1; }
	$(RUN_ENV) $(VENV)/bin/speechtl adapt $(RECIPE) $(OVERRIDES) $(if $(DATA),--data $(DATA)) --runs $(RUNS)

setup: $(STAMP)

# Debian packages the pipeline calls: espeak-ng (TTS and IPA), ffmpeg (decoding, codecs),
# the Spanish Asterisk prompts (real speech) and fortunes-es (text).
system-deps:
	@bash scripts/system-deps.sh

$(STAMP): pyproject.toml scripts/system-deps.sh
	@bash scripts/system-deps.sh
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet torch==2.13.0
	$(PY) -m pip install --quiet -e '.[all,test]'
	touch $(STAMP)

# the import layers of DESIGN.md first (import-linter, [tool.importlinter] in pyproject.toml), then the tests
test: setup
	$(VENV)/bin/lint-imports
	$(RUN_ENV) $(PY) -m pytest -q

# Voice-agent clients against speechtl (tests/integration/): Pipecat and LiveKit Agents, each in its own virtualenv
# (.venv-pipecat, .venv-livekit) from its fully pinned tests/integration/requirements-CLIENT.txt, without torch;
# the main virtualenv makes the tiny Whisper, its CT2 export and the speech clip, and runs `speechtl serve`.
INTEGRATION_ASSETS ?= build/integration
INTEGRATION_ENV := $(RUN_ENV) SPEECHTL_INTEGRATION_ASSETS=$(abspath $(INTEGRATION_ASSETS)) SPEECHTL_PYTHON=$(abspath $(PY))

.PHONY: integration
integration: setup .venv-pipecat/.speechtl-client .venv-livekit/.speechtl-client
	rm -rf $(INTEGRATION_ASSETS)
	$(RUN_ENV) $(PY) tests/integration/make_assets.py $(INTEGRATION_ASSETS)
	$(INTEGRATION_ENV) SPEECHTL_CLIENT=pipecat .venv-pipecat/bin/python -m pytest -q tests/integration
	$(INTEGRATION_ENV) SPEECHTL_CLIENT=livekit .venv-livekit/bin/python -m pytest -q tests/integration

.venv-%/.speechtl-client: tests/integration/requirements-%.txt
	rm -rf .venv-$*
	python3 -m venv .venv-$*
	.venv-$*/bin/python -m pip install --quiet --upgrade pip
	.venv-$*/bin/python -m pip install --quiet -r $<
	touch $@

# Data targets: one thin script per corpus in data_prep/ (corpus -> manifests with held-out splits).
prepare-asterisk: setup
	$(RUN_ENV) $(PY) data_prep/asterisk_es.py $(RUNS)/data/asterisk-es

prepare-es-co: setup
	$(RUN_ENV) $(PY) data_prep/asterisk_es.py $(RUNS)/data/asterisk-es-co --voice es-co

synth-es: setup
	$(RUN_ENV) $(PY) data_prep/synth_es.py $(RUNS)/data/synth-es

# make prepare-commonvoice CORPUS=/corpora/cv-corpus-17.0/es LANG=es
prepare-commonvoice: setup
	$(RUN_ENV) $(PY) data_prep/commonvoice.py $(CORPUS) $(RUNS)/data/cv-$(ADAPT_LANG) --lang $(ADAPT_LANG)

# make prepare-librispeech CORPUS=/corpora/mls_spanish LANG=es
prepare-librispeech: setup
	$(RUN_ENV) $(PY) data_prep/librispeech.py $(CORPUS) $(RUNS)/data/librispeech-$(ADAPT_LANG) --lang $(ADAPT_LANG)

bench: setup
	$(PY) bench/prepare.py

clean:
	rm -rf $(VENV) .pytest_cache

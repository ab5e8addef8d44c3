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

.PHONY: setup system-deps test adapt prepare-asterisk synth-es bench clean

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

prepare-asterisk: setup
	$(VENV)/bin/speechtl prepare --format asterisk /usr/share/asterisk/sounds/es_MX_f_Allison --lang es --out $(RUNS)/data/asterisk-es

synth-es: setup
	$(VENV)/bin/speechtl synth recipes/es/everyday.txt recipes/es/customer_service.txt recipes/es/medical.txt --lang es --engine kokoro --num-voices 8 --voices-per-sentence 2 --out $(RUNS)/data/synth-es

bench: setup
	$(PY) bench/prepare.py

clean:
	rm -rf $(VENV) .pytest_cache

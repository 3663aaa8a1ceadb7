#!/usr/bin/env bash
# Score any vision-language model on CogIP-Bench: a checkpoint of any family transformers knows (read from its
# config.json), or a model behind an OpenAI-compatible server (--backend openai --base-url URL --model NAME).
# --help: the variables and main options, e.g. MODEL_ID=HuggingFaceTB/SmolVLM-Instruct bash evaluation/cog_test.sh
FAMILY=auto
source "$(dirname "$0")/common.sh"

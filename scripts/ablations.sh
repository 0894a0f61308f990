#!/usr/bin/env bash
# The RecA paper's ablations (arXiv 2509.07295) as DVC experiments, one `dvc exp run -S ...` each.
#
#   scripts/ablations.sh                  # every ablation, one after the other
#   scripts/ablations.sh res-low i2t-0    # only these
#   scripts/ablations.sh --queue          # queue them all, then one worker runs the queue
#   scripts/ablations.sh --dry-run        # print the commands only
#
# Each experiment starts from the committed params.yaml plus its own -S overrides, in a
# temporary copy of the workspace (--temp), so the workspace and the other experiments are
# never touched. Stages whose inputs did not change come back from DVC's run cache.
# MLflow: each experiment is one parent run named after it (tag dvc.exp_name) in this
# repository's store, with one child run per stage that ran.
#
# Compare:   dvc exp show --only-changed
#            reca report --exp res-low --exp res-high
#            make mlflow-ui   (experiment `reca`, Training runs: filter tags.dvc.exp_name)
#
set -euo pipefail
cd "$(dirname "$0")/.."

usage() { sed -n '2,7p' "$0" | sed 's/^# \{0,1\}//'; }

MODE=(--temp)
DRY=0
SELECTED=()
for arg in "$@"; do
  case "$arg" in
    --queue) MODE=(--queue) ;;
    --dry-run) DRY=1 ;;
    -h|--help) usage; exit 0 ;;
    -*) echo "ablations.sh: unknown option $arg" >&2; usage >&2; exit 2 ;;
    *) SELECTED+=("$arg") ;;
  esac
done

NAMES=()
declare -A OVERRIDES
# exp NAME -S KEY=VALUE ...: define an ablation (values hold no spaces).
exp() {
  local name=$1
  shift
  NAMES+=("$name")
  OVERRIDES[$name]="$*"
}

# Understanding-input resolution (paper: 224 beats 512): how much of the image h_v sees,
# with no blur. res-low: 8 px of detail at the encoder's 32 px input; res-high: all 32 px.
exp res-low -S degrade.downup_factor=0.25 -S degrade.blur_sigma=0.0
exp res-high -S degrade.downup_factor=1.0 -S degrade.blur_sigma=0.0

# Blur on/off at full resolution (paper: blur prevents token-copying collapse).
# blur-off has res-high's params: DVC's run cache replays res-high's results for it.
exp blur-on -S degrade.downup_factor=1.0 -S degrade.blur_sigma=1.0
exp blur-off -S degrade.downup_factor=1.0 -S degrade.blur_sigma=0.0

# The image-to-text term (paper: keep lambda_i2t = 1 for models whose understanding and
# generation share parameters, as Janus does).
exp i2t-0 -S train.lambda_i2t=0.0
exp i2t-1 -S train.lambda_i2t=1.0

# Where the condition comes from (paper: the understanding encoder's embeddings beat the
# generation encoder's VAE latents). cond-vae-latents puts the generation tokenizer's codes of
# the same degraded image, through the generation embedding, where h_v goes (janus_ar and
# showo_masked implement it). cond-understanding is the default: DVC replays its results.
exp cond-understanding -S train.condition=understanding
exp cond-vae-latents -S train.condition=generation_latents

# Control that isolates h_v: the same unbiased images with h_v removed from the condition
# (template only); a RecA gain over this control is a gain from h_v.
exp cond-template-only -S train.condition=template_only

# Order (paper: SFT then RecA). Both start from the published model and spend 500 SFT
# steps and train.steps RecA steps: SFT before RecA (the sft stage), or after it (post_sft).
exp order-sft-reca -S sft.enabled=true -S sft.steps=500 -S post_sft.steps=0
exp order-reca-sft -S sft.enabled=false -S sft.steps=500 -S post_sft.steps=500

for name in "${SELECTED[@]}"; do
  if [[ -z ${OVERRIDES[$name]+set} ]]; then
    echo "ablations.sh: unknown ablation $name; known: ${NAMES[*]}" >&2
    exit 2
  fi
done
((${#SELECTED[@]})) || SELECTED=("${NAMES[@]}")

for name in "${SELECTED[@]}"; do
  read -r -a overrides <<<"${OVERRIDES[$name]}"
  cmd=(dvc exp run "${MODE[@]}" -n "$name" "${overrides[@]}")
  echo "${cmd[*]}"
  if ((DRY == 0)); then
    "${cmd[@]}"
  fi
done

if ((DRY == 0)) && [[ ${MODE[0]} == --queue ]]; then
  # One worker: the experiments share one MLflow sqlite store and 2 CPU cores.
  dvc queue start -j 1
  echo "queued; follow with: dvc queue status   (logs: dvc queue logs NAME)"
fi

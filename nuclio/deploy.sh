#!/usr/bin/env bash
# Deploy the Grounded SAM 2 functions into a running CVAT's Nuclio, as CVAT's own
# serverless/deploy_{cpu,gpu}.sh do.
#
#   nuclio/deploy.sh [--gpu] [FUNCTION_FOLDER ...]     (default: every folder in nuclio/serverless)
#
# The build context of each function is a staging folder holding its main.py, its
# function file and this repository (gsam2-src/, pip-installed by the build). CVAT's own
# serverless/deploy_{cpu,gpu}.sh use the function folder itself as the build context,
# which has no gsam2-src/: deploy these functions with this script, not with CVAT's.
#
# With DDS_API_TOKEN set, the token is passed to the functions' environment (for
# detectors generated with --detector dinox / grounding-dino-1.6-pro); it is never
# written into a function file.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
repo="$(dirname "$here")"
config="function.yaml"
if [[ "${1:-}" == "--gpu" ]]; then config="function-gpu.yaml"; shift; fi
folders=("$@")
if [[ ${#folders[@]} -eq 0 ]]; then folders=("$here"/serverless/*/); fi

# On a CVAT where no function was deployed before, the project does not exist and every
# deploy fails with "Project does not exist" (cvat-ai/cvat#6441); CVAT's scripts create it too.
if ! nuctl get project cvat --platform local >/dev/null 2>&1; then
  nuctl create project cvat --platform local
fi

for folder in "${folders[@]}"; do
  folder="${folder%/}"
  stage="$(mktemp -d)"
  # Build context: the function's main.py and function file, plus this repository to pip-install.
  cp "$folder/main.py" "$stage/"
  cp "$folder/$config" "$stage/function.yaml"
  mkdir -p "$stage/gsam2-src" && git -C "$repo" archive HEAD | tar -x -C "$stage/gsam2-src"
  echo "Deploying $(basename "$folder") ($config)..."
  nuctl deploy --project-name cvat --path "$stage" --file "$stage/function.yaml" --platform local \
    --env CVAT_FUNCTIONS_REDIS_HOST=cvat_redis_ondisk --env CVAT_FUNCTIONS_REDIS_PORT=6666 \
    --platform-config '{"attributes": {"network": "cvat_cvat"}}' \
    ${DDS_API_TOKEN:+--env "DDS_API_TOKEN=$DDS_API_TOKEN"}
  rm -rf "$stage"
done
nuctl get function --platform local

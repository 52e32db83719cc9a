# call 1: environment + the recipe end to end on a tiny Gemma on the GPU (real data, v7's config)
source .gpu/bin/env.sh || exit 1
nvidia-smi --query-gpu=name,memory.used,memory.total --format=csv
$PY -c "import torch, transformers, accelerate, hyperprag.hyper_encoder, bm25s, gguf; print(torch.__version__, transformers.__version__, accelerate.__version__, torch.cuda.is_available())"
sha256sum .gpu/c?/part
ls ../shared/data
rm -rf /tmp/smoke
time $PY -m accelerate.commands.launch --num_processes 1 --num_machines 1 --mixed_precision no --dynamo_backend no training/train_hypernet.py training/configs/retrieved_tied_gpu.yaml model=.gpu/tiny init_from=null read_rank=16 steps=12 max_minutes=null snapshot_every=6 save_every=6 log_every=3 out=/tmp/smoke 2>&1 | grep -v Warning | tail -25
ls /tmp/smoke /tmp/smoke/final; tail -2 /tmp/smoke/log.jsonl

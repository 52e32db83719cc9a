# last call: the real model, converted here from the carried GGUF; v7's run; its checkpoints and curve to $OUT
source .gpu/bin/env.sh || exit 1
OUT=${OUT:-/tmp/out}; mkdir -p $OUT
mkdir -p /tmp/g && cp -r .gpu/cE /tmp/g/ && sha256sum /tmp/g/c?/part
nvidia-smi --query-gpu=name,memory.used,memory.total --format=csv,noheader
time $PY -c "from hyperprag.models import load_base_model; m, t = load_base_model(None); print(type(m).__name__, len(t('The capital of France is Paris.')['input_ids']))" 2>&1 | grep -v Warn | tail -4
RUN=runs/v7_gpu
time timeout ${TRAIN_TIMEOUT:-420} $PY -m accelerate.commands.launch --num_processes 1 --num_machines 1 --mixed_precision no --dynamo_backend no \
  training/train_hypernet.py training/configs/retrieved_tied_gpu.yaml max_minutes=${MAXMIN:-4.5} $EXTRA 2>&1 \
  | tr '\r' '\n' | grep -v -e Warning -e '^train hypernet' > $OUT/train.txt
tail -12 $OUT/train.txt; cp $RUN/log.jsonl $OUT/; tail -3 $RUN/log.jsonl
snaps=($(ls -d $RUN/step-* 2>/dev/null | sort -t- -k2 -n)); n=${#snaps[@]}; echo "snapshots: ${snaps[@]}"
tar czf $OUT/final.tgz -C $RUN final heldout_hashes.json state/step.json
[ $n -ge 1 ] && tar czf $OUT/snapB.tgz -C $RUN $(basename ${snaps[$(( (2*n)/3 ))]} 2>/dev/null || basename ${snaps[$((n-1))]})
[ $n -ge 3 ] && tar czf $OUT/snapA.tgz -C $RUN $(basename ${snaps[$((n/3))]})
ls -la $OUT
time timeout ${CURVE_TIMEOUT:-150} $PY benchmarks/hyper_curve.py $RUN --out $OUT/curve 2>&1 | grep -v -e Warn -e 'snapshots:' | tail -20

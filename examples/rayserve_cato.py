"""CATO's router and autoscaling policy on a Ray Serve deployment of LLM engine replicas."""
import sys

import ray
from openai import OpenAI
from ray import serve
from ray.serve.config import AutoscalingConfig, AutoscalingPolicy, RequestRouterConfig

from cato.rayserve.app import CatoEngineDeployment
from cato.rayserve.autoscaling import CatoAutoscalingPolicy
from cato.rayserve.router import CatoRequestRouter

PORT = int(sys.argv[1]) if len(sys.argv) > 1 else 8001
# One engine per replica. The emulated engine here; for vLLM add e.g.
#   "command": ["vllm", "serve", "{model}", "--host", "{host}", "--port", "{port}",
#               "--max-num-seqs", "32"]
# and set "model" to the served model and "preset" to the closest coefficient set.
engine = {"model": "cato-emulated", "preset": "a100-llama7b", "concurrency": 32}

llm = serve.deployment(CatoEngineDeployment).options(
    name="LLM",
    ray_actor_options={"num_cpus": 1},          # {"num_gpus": 1} for a real engine
    max_ongoing_requests=32,                    # = the engine's batch concurrency
    graceful_shutdown_timeout_s=120,            # let long generations finish on scale-down
    request_router_config=RequestRouterConfig(
        request_router_class=CatoRequestRouter,
        request_router_kwargs={"model": "cato-emulated", "coefficients": "a100-llama7b"},
        request_routing_stats_period_s=1.0),
    autoscaling_config=AutoscalingConfig(
        min_replicas=1, max_replicas=4, initial_replicas=2,
        upscale_delay_s=0, downscale_delay_s=0,  # Algorithm 2 has its own hysteresis
        metrics_interval_s=2.0, look_back_period_s=10.0,
        policy=AutoscalingPolicy(policy_function=CatoAutoscalingPolicy,
                                 policy_kwargs={"interval_s": 10.0, "idle_timeout_s": 60.0})),
)
app = llm.bind(engine)

if __name__ == "__main__":
    ray.init(address="local", num_cpus=4, include_dashboard=False)
    serve.start(http_options={"host": "127.0.0.1", "port": PORT})
    serve.run(app, name="llm", route_prefix="/")
    client = OpenAI(base_url=f"http://127.0.0.1:{PORT}/v1", api_key="none")
    out = client.completions.create(model="cato-emulated", prompt="def quicksort(xs):",
                                    max_tokens=16, extra_headers={"x-cato-task": "completion"})
    print(out.choices[0].text)
    for chunk in client.chat.completions.create(
            model="cato-emulated", max_tokens=16, stream=True,
            messages=[{"role": "user", "content": "Summarise this module."}],
            extra_headers={"x-cato-task": "summarization", "x-slo-e2e-ms": "2000"}):
        print(chunk.choices[0].delta.content or "", end="", flush=True)
    print()
    serve.shutdown()
    ray.shutdown()

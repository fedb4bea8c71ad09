"""Former home of the MNIST demo, now `edgeopt.demo.mnist` (`edgeopt demo --task mnist`); kept so scripts that
import its models from here keep working."""
from edgeopt.demo.mnist import DEMO_MODELS, trained_model  # noqa: F401

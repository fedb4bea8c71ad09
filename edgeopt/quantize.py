"""edgeopt.quantize(model, data): the int8 lowering of edgeopt.passes.quantize (see there).

Kept as its own module so `import edgeopt.quantize` and `from edgeopt.quantize import ...` keep working;
the module itself is callable: `edgeopt.quantize(model, data)`.
"""
from edgeopt.passes.common import callable_module, sqnr_db
from edgeopt.passes.quantize import (OBSERVERS, U8_BETWEEN_LAYERS_DEFAULT, Lowering, QuantizeReport, Report,
                                     fold_batchnorm, fusion_plan, gptq_round, quantize)
from edgeopt.passes.report import LayerReport

__all__ = ["LayerReport", "Lowering", "OBSERVERS", "QuantizeReport", "Report", "U8_BETWEEN_LAYERS_DEFAULT",
           "fold_batchnorm", "fusion_plan", "gptq_round", "quantize", "sqnr_db"]

callable_module(__name__, quantize)

"""CATS: one transformer run by a swarm of microcontrollers (partition, train, export, simulate).

The package is laid out by the path a model takes, one layer per subpackage; a module imports
only its own layer and the layers below it (tests/test_layering.py checks this):

    base       repository locations, process settings
    wire       the bytes on the air and the line: protobuf messages, framed stream, radio PHYs
    model      the float transformer, its partition over D nodes, message-dropout, pruning
    training   data sets, the training loop, evaluation, checkpoints
    quant      the int8 model: the bit-exact integer reference (qref), int8 evaluation
    artefacts  what a node is flashed with: export / manifests, SomeGather frames
    analysis   the resource model: flash, RAM and airtime of a partition per node
    firmware   the C node build: Zephyr / M4 / host builds, ctypes binding to the host core,
               ELF image sizes
    sim        the simulated swarm: radio medium, loss, C node processes, replay, latency
    commands   the `cats` CLI subcommands and the west commands (thin wrappers)
"""

__version__ = "0.1.0"

# bottom to top; `cats.cli` (the console script's entry) belongs to `commands`
LAYERS = (
    "base",
    "wire",
    "model",
    "training",
    "quant",
    "artefacts",
    "analysis",
    "firmware",
    "sim",
    "commands",
)

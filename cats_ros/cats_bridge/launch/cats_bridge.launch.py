"""Start the cats_bridge node with its parameters file.

    ros2 launch cats_bridge cats_bridge.launch.py gateway:=tcp://127.0.0.1:7000 \\
        partition_dir:=/path/to/export [params_file:=my.yaml] [namespace:=robot1] \\
        [expected_partition_hash:=HEX] [log_level:=debug]

The parameters come from `params_file` (default: the installed config/cats_bridge.yaml, every
parameter documented); a non-empty gateway, partition_dir or expected_partition_hash
argument overrides the file's value. `cats serve` remains the one-command path for the
simulated swarm + bridge.
"""

from launch import LaunchDescription
from launch.actions import DeclareLaunchArgument, OpaqueFunction
from launch.substitutions import LaunchConfiguration, PathJoinSubstitution
from launch_ros.actions import Node
from launch_ros.parameter_descriptions import ParameterValue
from launch_ros.substitutions import FindPackageShare

PACKAGE = "cats_bridge"
EXECUTABLE = "cats_bridge"  # setup.py's console_scripts entry, in <prefix>/lib/cats_bridge
# Launch arguments that override the parameters file when not empty (strings all).
OVERRIDES = {
    "gateway": "tcp://HOST:PORT or serial:///dev/ttyACM0?baud=115200",
    "partition_dir": "the `cats export` directory (partition.json)",
    "expected_partition_hash": "hex sha256 the gateway must run (default: partition.json's)",
}


def _bridge(context, *args, **kwargs):
    """The Node action, with only the override arguments that were given."""
    overrides = {}
    for name in OVERRIDES:
        value = LaunchConfiguration(name).perform(context)
        if value:
            overrides[name] = ParameterValue(value, value_type=str)  # a hash stays a string
    parameters = [LaunchConfiguration("params_file")]
    if overrides:
        parameters.append(overrides)
    return [
        Node(
            package=PACKAGE,
            executable=EXECUTABLE,
            name="cats_bridge",
            namespace=LaunchConfiguration("namespace"),
            parameters=parameters,
            ros_arguments=["--log-level", LaunchConfiguration("log_level")],
            output="screen",
            emulate_tty=True,
        )
    ]


def generate_launch_description():
    default_params = PathJoinSubstitution([FindPackageShare(PACKAGE), "config", "cats_bridge.yaml"])
    return LaunchDescription(
        [
            DeclareLaunchArgument(
                "params_file",
                default_value=default_params,
                description="the node's parameters file (ros__parameters of cats_bridge)",
            ),
            *(
                DeclareLaunchArgument(
                    name, default_value="", description=f"{desc}; overrides params_file"
                )
                for name, desc in OVERRIDES.items()
            ),
            DeclareLaunchArgument("namespace", default_value="", description="node namespace"),
            DeclareLaunchArgument("log_level", default_value="info", description="ROS log level"),
            OpaqueFunction(function=_bridge),
        ]
    )

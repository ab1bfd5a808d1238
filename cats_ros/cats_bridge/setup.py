"""ament_python build of the cats_bridge node (colcon build), also `pip install -e` (setup.sh).

package.xml is the one source of the name, version, description, maintainer and license."""

import xml.etree.ElementTree as ET
from glob import glob
from pathlib import Path

from setuptools import find_packages, setup

HERE = Path(__file__).resolve().parent
PKG = ET.parse(HERE / "package.xml").getroot()
NAME = PKG.findtext("name")
SHARE = f"share/{NAME}"

setup(
    name=NAME,
    version=PKG.findtext("version"),
    description=" ".join(PKG.findtext("description").split()),
    maintainer=PKG.findtext("maintainer"),
    maintainer_email=PKG.find("maintainer").get("email"),
    license=PKG.findtext("license"),
    python_requires=">=3.11",
    packages=find_packages(include=[NAME, f"{NAME}.*"]),
    # The ament index marker, package.xml, the launch file and the parameters file go to
    # <prefix>/share (relative paths: colcon runs setup.py in this directory).
    data_files=[
        ("share/ament_index/resource_index/packages", [f"resource/{NAME}"]),
        (SHARE, ["package.xml"]),
        (f"{SHARE}/launch", sorted(glob("launch/*.launch.py"))),
        (f"{SHARE}/config", sorted(glob("config/*.yaml"))),
    ],
    # rclpy, cats_interfaces and cats come from the ROS 2 wheels / the workspace / setup.sh
    # (package.xml's exec_depends), not from pip.
    install_requires=[],
    zip_safe=True,
    entry_points={"console_scripts": [f"{NAME} = {NAME}.main:main"]},
)

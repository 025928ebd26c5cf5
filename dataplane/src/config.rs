//! The two configuration maps the program reads on every packet: the gateway
//! configuration (`FG_CONFIG`) and the drop capture filter (`FG_CAPTURE`),
//! read and written the same way for a loaded [`crate::Program`] and for
//! pinned state.

use aya::maps::{Array, Map, MapData};
use fluxgate_common::{CaptureConfig, GatewayConfig};

use crate::Error;

/// Reads the gateway configuration from the config map.
pub(crate) fn read_config(map: &Map) -> Result<GatewayConfig, Error> {
    let array: Array<&MapData, GatewayConfig> =
        Array::try_from(map).map_err(|e| Error::kernel("open the config map", e))?;
    array
        .get(&0, 0)
        .map_err(|e| Error::kernel("read the config map", e))
}

/// Replaces the gateway configuration in the config map.
pub(crate) fn write_config(map: &mut Map, config: &GatewayConfig) -> Result<(), Error> {
    let mut array: Array<&mut MapData, GatewayConfig> =
        Array::try_from(map).map_err(|e| Error::kernel("open the config map", e))?;
    array
        .set(0, config, 0)
        .map_err(|e| Error::kernel("write the config map", e))
}

/// Reads the capture configuration from the capture map.
pub(crate) fn read_capture(map: &Map) -> Result<CaptureConfig, Error> {
    let array: Array<&MapData, CaptureConfig> =
        Array::try_from(map).map_err(|e| Error::kernel("open the capture map", e))?;
    array
        .get(&0, 0)
        .map_err(|e| Error::kernel("read the capture map", e))
}

/// Replaces the capture configuration in the capture map.
pub(crate) fn write_capture(map: &mut Map, config: &CaptureConfig) -> Result<(), Error> {
    let mut array: Array<&mut MapData, CaptureConfig> =
        Array::try_from(map).map_err(|e| Error::kernel("open the capture map", e))?;
    array
        .set(0, config, 0)
        .map_err(|e| Error::kernel("write the capture map", e))
}
